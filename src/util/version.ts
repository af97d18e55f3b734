// The package version, read once from package.json (the CLI's --version and the admin's
// /server_info both show it).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

let cached: string | undefined;

export function packageVersion(): string {
  if (cached !== undefined) return cached;
  cached = 'unknown';
  // Compiled to dist/src/util/version.js, so the package root is three levels up.
  try {
    const pkg: unknown = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'package.json'), 'utf8'));
    if (typeof pkg === 'object' && pkg !== null && 'version' in pkg && typeof pkg.version === 'string') cached = pkg.version;
  } catch {
    // Keep "unknown": a missing package.json must not turn --version or the admin into a crash.
  }
  return cached;
}
