// The "latency over time" charts of the HTML report: p50, p99 and max per interval of a latency
// log, drawn as steps (each interval a flat segment over its own span) on a log latency axis, so
// a median in single milliseconds and a tail in seconds are both readable. Pure SVG with a <title>
// per interval (the browser's tooltip) and the interval's numbers as data-* attributes: no script.

import { escapeHtml, formatMs, ms } from './html-util';
import { HOST_LATENCY_METRICS, LATENCY_METRICS, METRIC_INFO, type LatencyMetricName } from './metrics';
import { columnWidthMs, combineIntervals, type LatencyTimeline, type TimelineColumn, type TimelinePoint } from './report-timeline';

const SERIES: Array<{ key: 'p50' | 'p99' | 'max'; color: string; width: number; dash?: string }> = [
  { key: 'p50', color: '#2ca02c', width: 2 },
  { key: 'p99', color: '#ff7f0e', width: 2 },
  { key: 'max', color: '#d62728', width: 1.2, dash: '4 3' },
];

/** Round steps for the time axis, in ms. */
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);

function timeLabel(t: number, stepMs: number, spanMs: number): string {
  const iso = new Date(t).toISOString(); // 2026-11-27T18:02:24.000Z
  const clock = stepMs >= 60_000 ? iso.slice(11, 16) : iso.slice(11, 19);
  return spanMs > 86_400_000 ? `${iso.slice(5, 10)} ${clock}` : clock;
}

/** Log-scale bounds (whole decades) around the values, in ms. */
function logBounds(values: number[]): { lo: number; hi: number } {
  const positive = values.filter((v) => v > 0);
  if (positive.length === 0) return { lo: 0.1, hi: 1 };
  let lo = 10 ** Math.floor(Math.log10(Math.min(...positive)));
  let hi = 10 ** Math.ceil(Math.log10(Math.max(...positive)));
  if (hi <= lo) hi = lo * 10;
  // At least two decades, so a flat series does not sit on the frame.
  if (hi / lo < 100) lo = hi / 100;
  return { lo, hi };
}

/** Gridlines at 1, 2, 5 x 10^k, or only at whole decades when those would be closer than ~16 px. */
function logTicks(lo: number, hi: number, plotH: number): number[] {
  const decades = Math.round(Math.log10(hi / lo));
  const multipliers = (decades * 3 + 1) * 16 <= plotH ? [1, 2, 5] : [1];
  const ticks: number[] = [];
  for (let d = lo; d <= hi * 1.0001; d *= 10) for (const m of multipliers) if (m * d <= hi * 1.0001) ticks.push(m * d);
  return ticks;
}

function tickText(value: number): string {
  return String(Number(value.toPrecision(3)));
}

function msAttr(us: number | null): string {
  return us === null ? '' : String(Number(ms(us).toFixed(3)));
}

export interface TimelineChartOptions {
  width?: number;
  height?: number;
  /** The x range: the whole log's span, so every chart of the page lines up. */
  startMs: number;
  endMs: number;
  columnMs: number;
}

/** One chart: the three series of one tag (metric or metric@host). */
export function timelineChart(title: string, tag: string, points: readonly TimelinePoint[], o: TimelineChartOptions): string {
  const width = o.width ?? 540;
  const height = o.height ?? 240;
  const m = { left: 56, right: 14, top: 28, bottom: 38 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const columns: TimelineColumn[] = combineIntervals(points, o.startMs, o.columnMs);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" class="timeline" data-tag="${escapeHtml(tag)}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(`${title} (${tag})`)}">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${m.left}" y="17" class="title">${escapeHtml(title)}</text>`,
  ];
  const live = columns.filter((c) => c.count > 0);
  if (live.length === 0 || o.endMs <= o.startMs) {
    parts.push(`<text x="${width / 2}" y="${height / 2}" text-anchor="middle" class="empty">no samples</text></svg>`);
    return parts.join('');
  }
  const values = live.flatMap((c) => [c.p50, c.p99, c.max]).filter((v): v is number => v !== null).map(ms);
  const { lo, hi } = logBounds(values);
  const spanMs = o.endMs - o.startMs;
  const px = (t: number): number => m.left + ((t - o.startMs) / spanMs) * plotW;
  const py = (v: number): number => m.top + plotH - (Math.log10(Math.max(v, lo) / lo) / Math.log10(hi / lo)) * plotH;
  const f = (n: number): string => n.toFixed(1);

  for (const y of logTicks(lo, hi, plotH)) {
    parts.push(`<line x1="${m.left}" x2="${m.left + plotW}" y1="${f(py(y))}" y2="${f(py(y))}" class="grid"/>`);
    parts.push(`<text x="${m.left - 5}" y="${f(py(y) + 4)}" text-anchor="end" class="tick">${tickText(y)}</text>`);
  }
  // About one label per 70 px, so the narrower host charts get fewer.
  const maxTicks = Math.max(2, Math.floor(plotW / 70));
  const stepMs = TIME_STEPS.find((s) => spanMs / s <= maxTicks) ?? 86_400_000 * Math.ceil(spanMs / 86_400_000 / maxTicks);
  for (let t = Math.ceil(o.startMs / stepMs) * stepMs; t <= o.endMs; t += stepMs) {
    parts.push(`<line x1="${f(px(t))}" x2="${f(px(t))}" y1="${m.top}" y2="${m.top + plotH}" class="grid"/>`);
    // A label at either edge would run past the card if centred: align it inside the frame.
    const anchor = px(t) > m.left + plotW - 24 ? 'end' : px(t) < m.left + 24 ? 'start' : 'middle';
    parts.push(`<text x="${f(px(t))}" y="${m.top + plotH + 14}" text-anchor="${anchor}" class="tick">${timeLabel(t, stepMs, spanMs)}</text>`);
  }
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${plotW}" height="${plotH}" class="frame"/>`);
  parts.push(`<text x="${m.left + plotW / 2}" y="${height - 6}" text-anchor="middle" class="axis">time (UTC)</text>`);
  parts.push(`<text x="12" y="${m.top + plotH / 2}" text-anchor="middle" class="axis" transform="rotate(-90 12 ${m.top + plotH / 2})">ms (log)</text>`);

  // Steps: a flat segment per column, joined by a vertical edge to the next one when they touch;
  // a column without samples (or a host absent from the log's busiest list then) is a gap.
  for (const s of SERIES) {
    let d = '';
    let lastEnd: number | null = null;
    for (const c of columns) {
      const v = c[s.key];
      if (c.count === 0 || v === null) {
        lastEnd = null;
        continue;
      }
      const y = f(py(ms(v)));
      d += `${lastEnd !== null && Math.abs(c.startMs - lastEnd) <= 1 ? 'L' : 'M'}${f(px(c.startMs))},${y}L${f(px(c.endMs))},${y}`;
      lastEnd = c.endMs;
    }
    const dash = s.dash === undefined ? '' : ` stroke-dasharray="${s.dash}"`;
    parts.push(`<path class="series-${s.key}" d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width}"${dash}/>`);
  }

  // One hover target per column: the tooltip and the numbers behind the drawing.
  for (const c of columns) {
    const when = `${new Date(c.startMs).toISOString().slice(11, 19)}–${new Date(c.endMs).toISOString().slice(11, 19)}`;
    const text =
      c.count === 0 || c.p50 === null
        ? `${when}: no samples`
        : `${when}: ${c.count} samples, p50 ${formatMs(ms(c.p50))} ms, p99 ${formatMs(ms(c.p99 ?? 0))} ms, max ${formatMs(ms(c.max ?? 0))} ms` +
          (c.intervals > 1 ? ` (${c.intervals} intervals: p99 and max are the largest, p50 the count-weighted mean)` : '');
    const data = `data-start="${new Date(c.startMs).toISOString()}" data-end="${new Date(c.endMs).toISOString()}" data-count="${c.count}" data-intervals="${c.intervals}" data-p50="${msAttr(c.p50)}" data-p99="${msAttr(c.p99)}" data-max="${msAttr(c.max)}"`;
    parts.push(
      `<g class="iv" ${data}><title>${escapeHtml(text)}</title><rect x="${f(px(c.startMs))}" y="${m.top}" width="${f(Math.max(1, px(c.endMs) - px(c.startMs)))}" height="${plotH}"/></g>`,
    );
  }

  // In the top margin, right of the title: nothing of the plot is hidden behind it.
  const legendX = m.left + plotW - 3 * 40;
  SERIES.forEach((s, i) => {
    const x = legendX + i * 40;
    parts.push(`<rect x="${x}" y="11" width="12" height="3" fill="${s.color}"/>`);
    parts.push(`<text x="${x + 15}" y="16" class="legend">${s.key}</text>`);
  });
  parts.push('</svg>');
  return parts.join('');
}

export const TIMELINE_STYLE = `
svg .iv rect { fill: transparent; } svg .iv:hover rect { fill: rgba(31, 119, 180, 0.10); }
h3 { font-size: 15px; margin: 18px 0 6px; font-weight: 600; }
`;

/**
 * The page's "over time" sections: one chart per metric proxy-wide, then one row per busiest host
 * (hosts as ranked for the whole log, i.e. by connections).
 */
export function timelineSections(timeline: LatencyTimeline, hosts: readonly string[]): string[] {
  const body: string[] = [];
  const columnMs = columnWidthMs(timeline);
  const span = { startMs: timeline.startMs, endMs: timeline.endMs, columnMs };
  const combined = timeline.intervalStarts.length > 0 && columnMs > (timeline.endMs - timeline.startMs) / timeline.intervalStarts.length;
  body.push('<h2>Latency over time</h2>');
  body.push(
    `<p class="meta">p50, p99 and max of each of the log's ${timeline.intervalStarts.length} intervals` +
      (combined ? `, combined into columns of ${(columnMs / 1000).toFixed(1)} s (p99 and max: the largest interval's)` : '') +
      '; hover an interval for its numbers.</p>',
  );
  body.push('<div class="grid-2">');
  for (const metric of LATENCY_METRICS) {
    const chart = timelineChart(`${metric}: ${METRIC_INFO[metric].title}`, metric, timeline.global[metric] ?? [], span);
    body.push(`<div class="card">${chart}</div>`);
  }
  body.push('</div>');
  if (hosts.length > 0) {
    body.push(`<h2>Busiest hosts over time (top ${hosts.length})</h2>`);
    for (const host of hosts) {
      const set = timeline.hosts.get(host) ?? {};
      body.push(`<h3>${escapeHtml(host)}</h3><div class="grid-2">`);
      for (const metric of HOST_LATENCY_METRICS as readonly LatencyMetricName[]) {
        // The host is in the heading above: the title stays short enough to clear the legend.
        const chart = timelineChart(metric, `${metric}@${host}`, set[metric] ?? [], { ...span, width: 350, height: 200 });
        body.push(`<div class="card">${chart}</div>`);
      }
      body.push('</div>');
    }
  }
  return body;
}
