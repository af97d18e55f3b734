// Re-render the markdown table and SVG chart (and the summary/targets in the JSON) from a stored
// results file, without running anything: `node dist/bench/render.js [bench/results/latest.json]`.
// The numbers all come from that file's runs; only the presentation is recomputed.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { type BenchResults, buildReport } from './lib/report';

function main(): void {
  const file = path.resolve(process.argv[2] ?? path.join(__dirname, '..', '..', 'bench', 'results', 'latest.json'));
  const raw: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (typeof raw !== 'object' || raw === null || (raw as { schema?: unknown }).schema !== 1) {
    throw new Error(`${file}: not a benchmark results file (schema 1)`);
  }
  const results = raw as BenchResults;
  const report = buildReport(results);
  const dir = path.dirname(file);
  const base = path.basename(file, '.json');
  fs.writeFileSync(file, JSON.stringify({ ...results, summary: report.summary, targets: report.targets }, null, 2) + '\n');
  fs.writeFileSync(path.join(dir, `${base}.md`), report.markdown);
  fs.writeFileSync(path.join(dir, `${base}.svg`), report.svg);
  process.stdout.write(report.markdown);
}

main();
