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
  // Keeps the event loop alive until the call settles: lib/rollback-guardian.ts's finish() waits for the
  // 'exit' of an unref'd child, so without a ref'd handle the process can end (code 0) before restore() settles.
  const keepAlive = setInterval(() => {}, 1 << 30);
  const start = process.hrtime.bigint();
  try {
    await api[operation]({ ns }, imageFile, {});
  } finally {
    clearInterval(keepAlive);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const vmHwmKb = Number(/^VmHWM:\s+(\d+)/m.exec(status)[1]);
  process.stdout.write(`${JSON.stringify({ operation, seconds, vmHwmKb })}\n`);
}

main().catch((error) => {
  process.stderr.write(`bench-api-worker: ${error && error.stack ? error.stack : error}\n`);
  process.exit(1);
});
