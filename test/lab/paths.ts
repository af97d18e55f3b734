// Locations of the repository, its fixtures and the built CLI, found from the compiled file's own
// directory (dist/test/lab/) by walking up to the directory that holds package.json.

import * as fs from 'node:fs';
import * as path from 'node:path';

function findRepoRoot(start: string): string {
  let dir = start;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'test', 'fixtures'))) {
      return dir;
    }
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new Error(`lab: cannot find the repository root (package.json + test/fixtures) above ${start}`);
    }
    dir = parent;
  }
}

export const repoRoot: string = findRepoRoot(__dirname);
export const fixturesDir: string = path.join(repoRoot, 'test', 'fixtures');
export const serversDir: string = path.join(fixturesDir, 'servers');
export const clientsDir: string = path.join(fixturesDir, 'clients');
export const cliPath: string = path.join(repoRoot, 'dist', 'src', 'cli.js');

export function serverScript(kind: string): string {
  return path.join(serversDir, `${kind}.js`);
}

export function clientScript(kind: string): string {
  return path.join(clientsDir, `${kind}.js`);
}
