// `splicegate report`: loads histograms (admin endpoint or log), prints the text report, and with
// --html writes the page. Returns the exit status.

import { writeFile } from 'node:fs/promises';
import { DEFAULT_ADMIN_URL, loadReportFromAdmin, loadReportFromLog } from './report-data';
import { renderReportHtml } from './report-html';
import { renderReportText } from './report-text';

export interface ReportOptions {
  /** Admin endpoint base URL; the default when neither admin nor log is given. */
  admin?: string;
  /** A latency interval log (splicegate run --latency-log). */
  log?: string;
  /** Where to write the HTML page. */
  html?: string;
  topHosts?: number;
}

export async function runReport(options: ReportOptions, write: (text: string) => void = (t) => process.stdout.write(t)): Promise<number> {
  const report = options.log !== undefined ? await loadReportFromLog(options.log) : await loadReportFromAdmin(options.admin ?? DEFAULT_ADMIN_URL);
  write(renderReportText(report, options.topHosts));
  if (options.html !== undefined) {
    await writeFile(options.html, renderReportHtml(report, options.topHosts));
    process.stderr.write(`HTML report written to ${options.html}\n`);
  }
  return 0;
}
