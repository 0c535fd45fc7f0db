// Where the package is installed, from lib/ (ts-jest) or dist/lib/ (the build).
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

export const PACKAGE_ROOT = path.resolve(__dirname, path.basename(path.dirname(__dirname)) === 'dist' ? '../..' : '..');

export const PACKAGE_VERSION: string = (JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
