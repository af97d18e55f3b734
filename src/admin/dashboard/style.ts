// The dashboard's stylesheet (inline in the page; no font or asset from anywhere). The latency
// plots bring their own classes (PLOT_STYLE, shared with the report).

import { PLOT_STYLE } from '../../latency/report-html';

export const DASHBOARD_STYLE = `
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #f3f4f6; }
header { background: #1f2937; color: #f9fafb; padding: 12px 24px; display: flex; flex-wrap: wrap; align-items: baseline; gap: 8px 28px; }
header h1 { font-size: 20px; margin: 0; font-weight: 600; }
header h1 small { font-size: 13px; font-weight: 400; color: #9ca3af; margin-left: 6px; }
header dl { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 0; }
header dl div { display: flex; gap: 6px; align-items: baseline; }
header dt { color: #9ca3af; font-size: 12px; } header dd { margin: 0; font-variant-numeric: tabular-nums; }
.badge { padding: 1px 10px; border-radius: 10px; font-size: 13px; font-weight: 600; }
.badge.ok { background: #16a34a; color: #fff; } .badge.warn { background: #d97706; color: #fff; }
.badge.bad { background: #dc2626; color: #fff; } .badge.idle { background: #6b7280; color: #fff; }
main { padding: 8px 24px 24px; }
h2 { font-size: 17px; margin: 22px 0 8px; }
h2 .aside { font-size: 12px; font-weight: 400; color: #6b7280; margin-left: 8px; }
.kpis { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 12px; }
.kpi { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 8px 14px; min-width: 140px; }
.kpi .label { color: #6b7280; font-size: 12px; } .kpi .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 6px; }
.card p { margin: 2px 8px 4px; color: #555; font-size: 12px; max-width: 520px; }
.card .figures { font-variant-numeric: tabular-nums; color: #222; }
table { border-collapse: collapse; background: #fff; border: 1px solid #dde1e6; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eef0f3; text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th:first-child, td:first-child, th.text, td.text { text-align: left; }
thead th { background: #f9fafb; font-weight: 600; font-size: 13px; }
#hosts-head th { cursor: pointer; user-select: none; }
#hosts-head th.sorted.desc::after { content: " \\25BC"; font-size: 10px; }
#hosts-head th.sorted.asc::after { content: " \\25B2"; font-size: 10px; }
.toolbar { display: flex; gap: 12px; align-items: center; margin-bottom: 8px; }
.toolbar input { font: inherit; padding: 4px 8px; border: 1px solid #c4c9d0; border-radius: 4px; width: 280px; }
.note { color: #6b7280; font-size: 12px; }
#policy-rules { margin-top: 10px; }
footer { padding: 0 24px 20px; }
#status { font-size: 12px; color: #4b5563; }
#status[data-state="error"] { color: #b91c1c; font-weight: 600; }
svg .title { font-size: 13px; font-weight: 600; fill: #222; }
${PLOT_STYLE}
`;
