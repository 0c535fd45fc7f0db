// Where the package is installed, from lib/ (ts-jest) or dist/lib/ (the build).
import * as path from 'node:path';

export const PACKAGE_ROOT = path.resolve(__dirname, path.basename(path.dirname(__dirname)) === 'dist' ? '../..' : '..');

export const PACKAGE_VERSION: string = (require(path.join(PACKAGE_ROOT, 'package.json')) as { version: string }).version;
