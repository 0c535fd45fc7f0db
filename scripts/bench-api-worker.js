#!/usr/bin/env node
// One ipc-ckpt API call (save or restore) in its own process, so the peak RSS measured is the call's own.
// Usage: node scripts/bench-api-worker.js save|restore NS_PATH IMAGE_FILE
// Prints one JSON line: the call's own wall time (module loading excluded) and the process's VmHWM.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

async function main() {
  const [operation, ns, imageFile] = process.argv.slice(2);
  if (!['save', 'restore'].includes(operation) || !ns || !imageFile) {
    process.stderr.write('usage: bench-api-worker.js save|restore NS_PATH IMAGE_FILE\n');
    process.exit(2);
  }
  const api = require(path.join(__dirname, '..', 'dist', 'lib', 'index.js'));
  // No keep-alive of our own: a call whose process ends before it settles shows up as a missing result.
  const start = process.hrtime.bigint();
  await api[operation]({ ns }, imageFile, {});
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const vmHwmKb = Number(/^VmHWM:\s+(\d+)/m.exec(status)[1]);
  process.stdout.write(`${JSON.stringify({ operation, seconds, vmHwmKb })}\n`);
}

main().catch((error) => {
  process.stderr.write(`bench-api-worker: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
