// Browser-side part of the dashboard (shipped inside the page, run by the browser, never by Node):
// number formatting and the small time-series SVG charts. Plain ES2020 in a string, so the page
// needs no bundler and no file beside it; the page test runs it in a real browser, and a unit test
// parses it. No backticks in here (the string is a template literal).

export const CLIENT_CHARTS = String.raw`
var COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];

function esc(text) {
  return String(text).replace(/[&<>"']/g, function (c) { return '&#' + c.charCodeAt(0) + ';'; });
}

// Counts and rates: "7", "0.5", "12.3k", "4.1M".
function fmtCount(v) {
  if (typeof v !== 'number' || !isFinite(v)) return '-';
  var a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
  if (a >= 100 || v === Math.round(v)) return String(Math.round(v));
  return v.toFixed(a >= 10 ? 1 : 2).replace(/\.?0+$/, '');
}

function fmtBytes(v) {
  if (typeof v !== 'number' || !isFinite(v)) return '-';
  var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  var i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  // "512 KiB", "1.5 MiB", "12 MiB": at most three significant digits, no trailing ".0".
  var text = i === 0 || Math.abs(v) >= 10 ? String(Math.round(v)) : v.toFixed(1).replace(/\.0$/, '');
  return text + ' ' + units[i];
}

function fmtPct(v) {
  return typeof v === 'number' && isFinite(v) ? v.toFixed(0) + '%' : '-';
}

// Microseconds in, milliseconds out, as the latency report prints them.
function fmtMs(us) {
  if (typeof us !== 'number' || !isFinite(us)) return '-';
  var v = us / 1000;
  if (v === 0) return '0';
  if (v >= 100) return v.toFixed(0);
  if (v >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

function fmtDuration(seconds) {
  if (typeof seconds !== 'number' || !isFinite(seconds)) return '-';
  var s = Math.max(0, Math.floor(seconds));
  var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d > 0) return d + 'd ' + h + 'h';
  if (h > 0) return h + 'h ' + m + 'm';
  if (m > 0) return m + 'm ' + (s % 60) + 's';
  return s + 's';
}

// A round axis maximum at or above value; binary: round in KiB, MiB, ... (byte axes).
function niceMax(value, binary) {
  // Bytes: at least 1 KiB, so an idle axis does not read "0 B, 1 B, 1 B".
  if (binary && value < 1024) return 1024;
  if (binary) {
    var unit = Math.pow(1024, Math.floor(Math.log(value) / Math.log(1024)));
    return niceMax(value / unit, false) * unit;
  }
  if (!(value > 0)) return 1;
  var magnitude = Math.pow(10, Math.floor(Math.log10(value)));
  var steps = [1, 2, 2.5, 5, 10];
  for (var i = 0; i < steps.length; i++) if (steps[i] * magnitude >= value) return steps[i] * magnitude;
  return 10 * magnitude;
}

// One chart: series = [{label, color, points: [[timeMs, value], ...]}] over the last windowMs up to
// now. opts.fmt formats axis labels and the legend's latest values; opts.yMax fixes the scale
// (percentages); opts.binary rounds the scale in powers of 1024 (bytes).
function timeChart(title, series, opts, now, windowMs) {
  var fmt = opts.fmt, yMax = opts.yMax;
  var W = 380, H = 204, L = 64, R = 12, T = 26, B = 56;
  var pw = W - L - R, ph = H - T - B;
  var top = 0;
  series.forEach(function (s) { s.points.forEach(function (p) { if (p[1] > top) top = p[1]; }); });
  var max = yMax !== undefined ? yMax : niceMax(top, opts.binary);
  var x = function (t) { return L + (1 - (now - t) / windowMs) * pw; };
  var y = function (v) { return T + ph - (Math.min(v, max) / max) * ph; };
  var out = ['<svg width="' + W + '" height="' + H + '" viewBox="0 0 ' + W + ' ' + H + '" role="img" aria-label="' + esc(title) + '">'];
  out.push('<rect x="0" y="0" width="' + W + '" height="' + H + '" fill="#fff"/>');
  out.push('<text x="' + L + '" y="17" class="title">' + esc(title) + '</text>');
  [0, 0.5, 1].forEach(function (f) {
    var yy = y(max * f).toFixed(1);
    out.push('<line x1="' + L + '" x2="' + (L + pw) + '" y1="' + yy + '" y2="' + yy + '" class="grid"/>');
    out.push('<text x="' + (L - 5) + '" y="' + (Number(yy) + 4) + '" text-anchor="end" class="tick">' + esc(fmt(max * f)) + '</text>');
  });
  var ago = function (ms) { return ms >= 60000 ? '-' + +(ms / 60000).toFixed(1) + ' min' : '-' + Math.round(ms / 1000) + ' s'; };
  [[windowMs, ago(windowMs)], [windowMs / 2, ago(windowMs / 2)], [0, 'now']].forEach(function (tick, i) {
    var xx = x(now - tick[0]).toFixed(1);
    out.push('<line x1="' + xx + '" x2="' + xx + '" y1="' + T + '" y2="' + (T + ph) + '" class="grid"/>');
    out.push('<text x="' + xx + '" y="' + (T + ph + 14) + '" text-anchor="' + (i === 0 ? 'start' : i === 2 ? 'end' : 'middle') + '" class="tick">' + tick[1] + '</text>');
  });
  out.push('<rect x="' + L + '" y="' + T + '" width="' + pw + '" height="' + ph + '" class="frame"/>');
  series.forEach(function (s) {
    var pts = s.points.filter(function (p) { return now - p[0] <= windowMs; });
    if (pts.length === 1) {
      out.push('<circle cx="' + x(pts[0][0]).toFixed(1) + '" cy="' + y(pts[0][1]).toFixed(1) + '" r="2.5" fill="' + s.color + '"/>');
    } else if (pts.length > 1) {
      var d = pts.map(function (p, i) { return (i === 0 ? 'M' : 'L') + x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1); }).join('');
      out.push('<path d="' + d + '" fill="none" stroke="' + s.color + '" stroke-width="1.8"/>');
    }
  });
  // Legend under the plot: each series with its latest value.
  var lx = 8, ly = H - 24;
  series.forEach(function (s) {
    var last = s.points.length ? s.points[s.points.length - 1][1] : NaN;
    var text = s.label + ' ' + fmt(last);
    if (lx > 8 && lx + 14 + text.length * 6.2 > W) { lx = 8; ly += 15; }
    out.push('<rect x="' + lx + '" y="' + (ly - 8) + '" width="10" height="10" rx="2" fill="' + s.color + '"/>');
    out.push('<text x="' + (lx + 14) + '" y="' + ly + '" class="legend">' + esc(text) + '</text>');
    lx += 14 + text.length * 6.2 + 14;
  });
  out.push('</svg>');
  return out.join('');
}
`;
