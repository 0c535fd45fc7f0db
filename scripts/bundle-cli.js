#!/usr/bin/env node
// After tsc: bundles the CLI (dist/lib/cli.js and the lib/ modules it requires, lazily required
// ones included) into dist/lib/cli.bundle.js, the file bin/ipc-ckpt.js runs (lib/cli-launch.ts).
// npm packages stay outside the bundle, required from node_modules as before.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const esbuild = require('esbuild');

const libDir = path.join(__dirname, '..', 'dist', 'lib');
const outfile = path.join(libDir, 'cli.bundle.js');

esbuild.buildSync({
  entryPoints: [path.join(libDir, 'cli.js')],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  packages: 'external',
  logLevel: 'warning',
});
// Code caches of the bundle this replaces: their header no longer matches, so they would only be rewritten.
for (const entry of fs.readdirSync(libDir)) {
  if (/^cli\.bundle\..*\.v8cache(\..*\.tmp)?$/.test(entry)) fs.unlinkSync(path.join(libDir, entry));
}
