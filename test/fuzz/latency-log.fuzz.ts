// Fuzz target (Jazzer.js): `splicegate report --log FILE`, the reading of an HdrHistogram interval
// log (src/latency/log-check.ts, then hdr-histogram-js' reader and decoder) and the text and HTML
// reports made of it. Any bytes, read as the log's UTF-8 text, must give either a report or an
// Error that names the file; any other exception, a hang (-timeout) or a memory blow-up
// (-rss_limit_mb) is a finding. Run by scripts/fuzz.sh.

import { reportFromLogText } from '../../src/latency/report-data';
import { renderReportHtml } from '../../src/latency/report-html';
import { renderReportText } from '../../src/latency/report-text';

const SOURCE = 'fuzz.hlog';

export function fuzz(data: Buffer): void {
  let report;
  try {
    report = reportFromLogText(data.toString('utf8'), SOURCE);
  } catch (err) {
    if (!(err instanceof Error) || !err.message.startsWith(`${SOURCE}`)) throw err;
    return;
  }
  if (report.description.includes('NaN')) throw new Error(`a report that says NaN: ${report.description}`);
  // What the command prints and writes must not throw either.
  renderReportText(report);
  renderReportHtml(report);
}
