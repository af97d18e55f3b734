// Findings that are known and tracked but not fixed yet (test/fuzz/known-findings.json). A target
// tolerates a finding whose code is listed there, so the CI fuzz step keeps guarding everything
// else; scripts/fuzz.sh checks each entry's seed still reproduces it (SPLICEGATE_FUZZ_STRICT=1)
// and fails once it does not, so the entry is removed together with the fix.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export class FuzzFinding extends Error {
  constructor(
    readonly target: string,
    readonly code: string,
    detail: string,
  ) {
    super(`[${code}] ${detail}`);
    this.name = 'FuzzFinding';
  }
}

interface KnownFinding {
  target: string;
  code: string;
  seed: string;
  issue: string;
}

/** From dist/test/fuzz (compiled) or test/fuzz (source): the JSON lives beside the source. */
const FILE = join(__dirname, '..', '..', '..', 'test', 'fuzz', 'known-findings.json');
const known: KnownFinding[] = process.env.SPLICEGATE_FUZZ_STRICT === '1' ? [] : (JSON.parse(readFileSync(FILE, 'utf8')) as KnownFinding[]);

export function isKnown(finding: FuzzFinding): boolean {
  return known.some((k) => k.target === finding.target && k.code === finding.code);
}
