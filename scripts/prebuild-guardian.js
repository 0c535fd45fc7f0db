// npm pack's prebuild step: the rollback guardian program goes beside the prebuilt addon, where
// lib/rollback-guardian.ts looks for it when no local build exists.
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const target = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
fs.mkdirSync(target, { recursive: true });
fs.copyFileSync(path.join(root, 'build', 'Release', 'ipc-ckpt-guardian'), path.join(target, 'ipc-ckpt-guardian'));
