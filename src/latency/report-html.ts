// `splicegate report --html FILE`: one self-contained page (inline CSS and SVG, no script, no
// external asset) with HdrHistogram-style percentile plots: x is 1/(1-p) on a log scale, so 90%,
// 99%, 99.9% ... are evenly spaced and the tail gets the room it deserves; y is latency in ms.
// From a latency log it also charts each interval's p50/p99/max over time (report-timeline-html).

import type { Histogram } from 'hdr-histogram-js';
import { COLORS, escapeHtml, formatMs, ms } from './html-util';
import { HOST_LATENCY_METRICS, LATENCY_METRICS, METRIC_INFO, type LatencyMetricName } from './metrics';
import type { LatencyReport } from './report-data';
import { TIMELINE_STYLE, timelineSections } from './report-timeline-html';

/** 99.9999%: past this the plot would show single samples, not a distribution. */
const MAX_NINES = 6;
const STEPS_PER_DECADE = 50;

interface Series {
  label: string;
  color: string;
  histogram: Histogram;
}

/** Axis ticks are round numbers: print them without trailing zeros ("2.5", "20"). */
function formatTick(value: number): string {
  return String(Number(value.toPrecision(6)));
}

/** "90%", "99.9%": the percentile at x = log10(1/(1-p)). */
function percentileLabel(nines: number): string {
  if (nines === 0) return '0%';
  return `${(100 - 100 / 10 ** nines).toFixed(Math.max(0, nines - 2))}%`;
}

/** A round axis maximum at or above value, and its tick step. */
function niceScale(value: number): { max: number; step: number } {
  if (value <= 0) return { max: 1, step: 0.25 };
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) {
    if (m * magnitude >= value) {
      const max = m * magnitude;
      const step = max / (m === 2.5 ? 5 : m === 1 || m === 10 ? 5 : 4);
      return { max, step };
    }
  }
  return { max: 10 * magnitude, step: 2 * magnitude };
}

/** Points (nines, ms) along the percentile curve, up to the deepest percentile the count supports. */
function curve(h: Histogram, maxNines: number): Array<[number, number]> {
  const points: Array<[number, number]> = [];
  const reach = Math.min(maxNines, Math.log10(Math.max(h.totalCount, 1)));
  for (let i = 0; i <= Math.ceil(reach * STEPS_PER_DECADE); i++) {
    const nines = Math.min(i / STEPS_PER_DECADE, reach);
    const p = 100 * (1 - 10 ** -nines);
    points.push([nines, ms(h.getValueAtPercentile(p))]);
  }
  points.push([reach, ms(h.maxValue === 0 ? 0 : h.getValueAtPercentile(100))]);
  return points;
}

// Inline SVG in an HTML page: the parser gives it the SVG namespace, so no xmlns (and so no URL in
// pages that promise to hold none, like the admin dashboard).
function chart(title: string, series: Series[], width = 540, height = 300): string {
  const m = { left: 62, right: 30, top: 30, bottom: 46 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const live = series.filter((s) => s.histogram.totalCount > 0);
  const parts: string[] = [
    `<svg width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(title)}">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${m.left}" y="18" class="title">${escapeHtml(title)}</text>`,
  ];
  if (live.length === 0) {
    parts.push(`<text x="${width / 2}" y="${height / 2}" text-anchor="middle" class="empty">no samples</text></svg>`);
    return parts.join('');
  }
  const curves = live.map((s) => ({ s, points: curve(s.histogram, MAX_NINES) }));
  const nines = Math.max(2, Math.ceil(Math.max(...curves.map((c) => c.points[c.points.length - 1]?.[0] ?? 0)) - 1e-9));
  const yScale = niceScale(Math.max(...curves.flatMap((c) => c.points.map(([, y]) => y))));
  const px = (x: number): number => m.left + (x / nines) * plotW;
  const py = (y: number): number => m.top + plotH - (y / yScale.max) * plotH;

  for (let y = 0; y <= yScale.max + yScale.step / 2; y += yScale.step) {
    parts.push(`<line x1="${m.left}" x2="${m.left + plotW}" y1="${py(y).toFixed(1)}" y2="${py(y).toFixed(1)}" class="grid"/>`);
    parts.push(`<text x="${m.left - 6}" y="${(py(y) + 4).toFixed(1)}" text-anchor="end" class="tick">${formatTick(y)}</text>`);
  }
  for (let x = 0; x <= nines; x++) {
    parts.push(`<line x1="${px(x).toFixed(1)}" x2="${px(x).toFixed(1)}" y1="${m.top}" y2="${m.top + plotH}" class="grid"/>`);
    // The last label would run past the frame if centred: right-align it on its gridline.
    const anchor = x === nines ? 'end' : 'middle';
    parts.push(`<text x="${px(x).toFixed(1)}" y="${m.top + plotH + 16}" text-anchor="${anchor}" class="tick">${percentileLabel(x)}</text>`);
  }
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${plotW}" height="${plotH}" class="frame"/>`);
  parts.push(`<text x="${m.left + plotW / 2}" y="${height - 8}" text-anchor="middle" class="axis">percentile</text>`);
  parts.push(`<text x="14" y="${m.top + plotH / 2}" text-anchor="middle" class="axis" transform="rotate(-90 14 ${m.top + plotH / 2})">latency (ms)</text>`);
  for (const { s, points } of curves) {
    const d = points.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join('');
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`);
  }
  if (series.length > 1) {
    // Behind the legend, so curves passing under it do not make it unreadable.
    const widest = Math.max(...live.map((s) => s.label.length));
    parts.push(`<rect x="${m.left + 4}" y="${m.top + 2}" width="${28 + widest * 6.5}" height="${live.length * 15 + 4}" class="legend-box"/>`);
    live.forEach((s, i) => {
      const y = m.top + 12 + i * 15;
      parts.push(`<rect x="${m.left + 10}" y="${y - 8}" width="12" height="3" fill="${s.color}"/>`);
      parts.push(`<text x="${m.left + 27}" y="${y - 2}" class="legend">${escapeHtml(s.label)}</text>`);
    });
  }
  parts.push('</svg>');
  return parts.join('');
}

/** One metric's percentile plot ("no samples" when h is absent or empty): the report's and the dashboard's. */
export function metricPlot(metric: LatencyMetricName, h: Histogram | undefined): string {
  const title = `${metric}: ${METRIC_INFO[metric].title}`;
  return chart(title, h === undefined ? [] : [{ label: metric, color: COLORS[0] ?? '#000', histogram: h }]);
}

const SUMMARY_PERCENTILES: Array<[string, number]> = [
  ['p50', 50],
  ['p90', 90],
  ['p99', 99],
  ['p99.9', 99.9],
  ['p99.99', 99.99],
  ['max', 100],
];

function summaryRow(label: string, h: Histogram | undefined, color?: string): string {
  const swatch = color === undefined ? '' : `<span class="swatch" style="background:${color}"></span>`;
  if (h === undefined || h.totalCount === 0) {
    return `<tr><th>${swatch}${escapeHtml(label)}</th><td>0</td>${SUMMARY_PERCENTILES.map(() => '<td>-</td>').join('')}</tr>`;
  }
  const cells = SUMMARY_PERCENTILES.map(([, p]) => `<td>${formatMs(ms(h.getValueAtPercentile(p)))}</td>`).join('');
  return `<tr><th>${swatch}${escapeHtml(label)}</th><td>${h.totalCount}</td>${cells}</tr>`;
}

function summaryTable(rows: string[]): string {
  const head = `<tr><th></th><th>count</th>${SUMMARY_PERCENTILES.map(([l]) => `<th>${l}</th>`).join('')}</tr>`;
  return `<table><thead>${head}</thead><tbody>${rows.join('')}</tbody></table>`;
}

/** The plots' own classes: every page that shows chart() output (this report, the admin dashboard) includes it. */
export const PLOT_STYLE = `
svg .title { font-size: 14px; font-weight: 600; fill: #222; }
svg .tick { font-size: 11px; fill: #555; } svg .axis { font-size: 12px; fill: #333; }
svg .legend { font-size: 11px; fill: #222; } svg .empty { font-size: 14px; fill: #888; }
svg .grid { stroke: #e6e8eb; stroke-width: 1; } svg .frame { fill: none; stroke: #9aa0a6; }
svg .legend-box { fill: #fff; fill-opacity: 0.85; stroke: #dde1e6; }
`;

const STYLE = `
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; background: #f6f7f9; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
.meta { color: #555; margin: 0 0 16px; }
.grid-2 { display: flex; flex-wrap: wrap; gap: 16px; }
.card { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 8px; }
.card p { margin: 4px 8px; color: #555; font-size: 12px; max-width: 520px; }
table { border-collapse: collapse; background: #fff; border: 1px solid #dde1e6; margin-bottom: 16px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eef0f3; text-align: right; font-variant-numeric: tabular-nums; }
th:first-child { text-align: left; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; border-radius: 2px; }
`;

export function renderReportHtml(report: LatencyReport, topHosts = 8): string {
  const body: string[] = [];
  body.push(`<h1>splicegate latency report</h1>`);
  body.push(`<p class="meta">${escapeHtml(report.source)} &middot; ${escapeHtml(report.description)} &middot; values in milliseconds</p>`);

  body.push('<h2>Proxy-wide</h2>');
  body.push(summaryTable(LATENCY_METRICS.map((m) => summaryRow(m, report.global[m]))));
  body.push('<div class="grid-2">');
  for (const metric of LATENCY_METRICS) {
    body.push(`<div class="card">${metricPlot(metric, report.global[metric])}<p>${escapeHtml(METRIC_INFO[metric].description)}</p></div>`);
  }
  body.push('</div>');

  const hosts = report.hosts.slice(0, topHosts);
  body.push(`<h2>Busiest hosts (top ${hosts.length} of ${report.hosts.length})</h2>`);
  if (hosts.length === 0) {
    body.push('<p class="meta">No per-host histograms.</p>');
  } else {
    const color = (i: number): string => COLORS[i % COLORS.length] ?? '#000';
    body.push('<div class="grid-2">');
    for (const metric of HOST_LATENCY_METRICS) {
      const series = hosts.flatMap(({ address, set }, i) => {
        const histogram = set[metric];
        return histogram === undefined ? [] : [{ label: address, color: color(i), histogram }];
      });
      body.push(`<div class="card">${chart(`${metric} by host`, series)}</div>`);
    }
    body.push('</div>');
    for (const metric of HOST_LATENCY_METRICS) {
      body.push(`<h2>${escapeHtml(metric)} by host</h2>`);
      body.push(summaryTable(hosts.map(({ address, set }, i) => summaryRow(address, set[metric], color(i)))));
    }
  }
  if (report.timeline !== undefined) {
    body.push(...timelineSections(report.timeline, hosts.map((h) => h.address)));
  } else {
    body.push('<h2>Latency over time</h2><p class="meta">Only from a latency log: <code>splicegate report --log FILE --html OUT</code> (the admin endpoint serves totals since start).</p>');
  }
  return [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>splicegate latency report</title><style>${STYLE}${PLOT_STYLE}${TIMELINE_STYLE}</style></head>`,
    `<body>${body.join('\n')}</body></html>`,
    '',
  ].join('\n');
}
