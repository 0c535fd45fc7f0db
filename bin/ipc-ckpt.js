#!/usr/bin/env node
'use strict';
// Sets the exit code rather than calling process.exit(), so piped stdout is flushed first.
require('../dist/lib/cli-launch.js')
  .runCli(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code;
  });
