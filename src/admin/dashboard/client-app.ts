// Browser-side part of the dashboard: polls the admin's JSON endpoints every pollMs, keeps the last
// windowMs of /stats samples in the page (the server keeps no history), and renders the header,
// traffic charts, destinations table, latency plots and listeners. Expects CLIENT_CHARTS' functions
// and a settings object S (DashboardSettings) in scope. No backticks in here (template literal).

export const CLIENT_APP = String.raw`
var E = S.endpoints;
var state = {
  samples: [],      // [{t, v}]: /stats values at time t (ms)
  info: null,       // /server_info
  clusters: null,   // /clusters?format=json
  latency: null,    // /latency?format=json
  plots: null,      // /latency?format=plots
  ready: null,      // {status, text} of /ready
  failed: [],       // endpoints that failed on the last update
  updates: 0,
  busy: false,
  sortKey: 'total',
  sortDir: -1,
  filter: ''
};

function byId(id) { return document.getElementById(id); }
function setText(id, text) { var el = byId(id); if (el && el.textContent !== text) el.textContent = text; }
function setHtml(el, html) { if (el && el.innerHTML !== html) el.innerHTML = html; }

function fetchJson(path) {
  return fetch(path, { cache: 'no-store', headers: { accept: 'application/json' } }).then(function (r) {
    if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
    return r.json();
  });
}

function fetchText(path) {
  return fetch(path, { cache: 'no-store' }).then(function (r) {
    return r.text().then(function (text) { return { status: r.status, text: text }; });
  });
}

function num(values, name) {
  var x = values ? values[name] : undefined;
  return typeof x === 'number' && isFinite(x) ? x : 0;
}

// Per-second rate of f between consecutive samples (a counter never goes backwards; if it did, 0).
function rates(f) {
  var out = [];
  for (var i = 1; i < state.samples.length; i++) {
    var a = state.samples[i - 1], b = state.samples[i];
    var dt = (b.t - a.t) / 1000;
    if (dt > 0) out.push([b.t, Math.max(0, (f(b.v) - f(a.v)) / dt)]);
  }
  return out;
}

function gauge(f) { return state.samples.map(function (s) { return [s.t, f(s.v)]; }); }
function last(points) { return points.length ? points[points.length - 1][1] : NaN; }

function overflow(v) { return num(v, 'downstream_cx_overflow') + num(v, 'upstream_cx_overflow'); }

// Share of relayed bytes moved by splice(2) between samples; no point where nothing moved.
function spliceShare() {
  var out = [];
  for (var i = 1; i < state.samples.length; i++) {
    var a = state.samples[i - 1].v, b = state.samples[i].v;
    var ds = num(b, 'splice_bytes') - num(a, 'splice_bytes');
    var dc = num(b, 'copy_bytes') - num(a, 'copy_bytes');
    if (ds + dc > 0) out.push([state.samples[i].t, (100 * ds) / (ds + dc)]);
  }
  return out;
}

function configGeneration() {
  var field = S.configGenerationField;
  var stats = state.samples.length ? state.samples[state.samples.length - 1].v : null;
  if (stats && stats[field] !== undefined) return String(stats[field]);
  if (state.ready) {
    try {
      var body = JSON.parse(state.ready.text);
      if (body && body[field] !== undefined) return String(body[field]);
    } catch (e) { /* text body */ }
    var m = new RegExp(field.replace(/[.*+?^$()|[\]\\{}]/g, '\\$&') + '\\s*[:=]\\s*(\\d+)').exec(state.ready.text);
    if (m) return m[1];
  }
  return '1';
}

function renderHeader() {
  var info = state.info;
  setText('version', info ? 'v' + info.version : '');
  setText('uptime', info ? fmtDuration(info.uptime_s) : '-');
  setText('generation', configGeneration());
  setText('config-file', info ? info.config_file : '-');
  setText('workers', info ? info.workers.alive + '/' + info.workers.configured : '-');
  setText('restarts', info ? String(info.workers.restarts) : '-');
  var badge = byId('state');
  var word = 'unreachable';
  if (state.ready) word = state.ready.status === 200 ? 'ready' : state.ready.text.trim() || 'not ready';
  else if (info) word = info.state;
  badge.textContent = word;
  badge.className = 'badge ' + (word === 'ready' ? 'ok' : word === 'draining' ? 'warn' : word === 'unreachable' ? 'bad' : 'idle');
}

// The charts' time axis: the samples kept so far, at least a minute, at most windowMs (a fresh
// page's few points would otherwise sit squeezed at the right edge of a 10-minute axis).
function chartWindow(now) {
  var span = state.samples.length ? now - state.samples[0].t : 0;
  return Math.min(S.windowMs, Math.max(60000, span));
}

function renderTraffic() {
  var now = Date.now(), w = chartWindow(now);
  var v = state.samples.length ? state.samples[state.samples.length - 1].v : {};
  var active = gauge(function (x) { return num(x, 'downstream_cx_active'); });
  var upActive = gauge(function (x) { return num(x, 'upstream_cx_active'); });
  var cps = rates(function (x) { return num(x, 'downstream_cx_total'); });
  var rx = rates(function (x) { return num(x, 'bytes_received'); });
  var tx = rates(function (x) { return num(x, 'bytes_sent'); });
  var share = spliceShare();
  var copy = share.map(function (p) { return [p[0], 100 - p[1]]; });
  var refused = [
    { label: 'policy', f: function (x) { return num(x, 'policy_denied'); } },
    { label: 'loop', f: function (x) { return num(x, 'loop_rejected'); } },
    { label: 'overflow', f: overflow },
    { label: 'no original dst', f: function (x) { return num(x, 'no_original_dst'); } }
  ].map(function (r, i) { return { label: r.label, color: COLORS[i], points: rates(r.f), total: r.f(v) }; });
  var bytesPerSec = function (b) { return fmtBytes(b) + '/s'; };

  setText('kpi-active', fmtCount(num(v, 'downstream_cx_active')));
  setText('kpi-cps', fmtCount(last(cps)));
  setText('kpi-total', fmtCount(num(v, 'downstream_cx_total')));
  setText('kpi-rx', bytesPerSec(last(rx)));
  setText('kpi-tx', bytesPerSec(last(tx)));
  setText('kpi-splice', fmtPct(last(share)));
  setText('kpi-refused', fmtCount(refused.reduce(function (sum, r) { return sum + r.total; }, 0)));

  setHtml(byId('chart-active'), timeChart('connections active', [
    { label: 'clients', color: COLORS[0], points: active },
    { label: 'upstreams', color: COLORS[2], points: upActive }
  ], { fmt: fmtCount }, now, w));
  setHtml(byId('chart-cps'), timeChart('new connections per second', [{ label: 'accepted/s', color: COLORS[0], points: cps }], { fmt: fmtCount }, now, w));
  setHtml(byId('chart-bytes'), timeChart('bytes per second', [
    { label: 'client\u2192upstream', color: COLORS[0], points: rx },
    { label: 'upstream\u2192client', color: COLORS[3], points: tx }
  ], { fmt: bytesPerSec, binary: true }, now, w));
  setHtml(byId('chart-splice'), timeChart('relayed bytes: splice vs copy', [
    { label: 'splice', color: COLORS[2], points: share },
    { label: 'copy', color: COLORS[4], points: copy }
  ], { fmt: fmtPct, yMax: 100 }, now, w));
  setHtml(byId('chart-refused'), timeChart('refused per second, by reason', refused, { fmt: fmtCount }, now, w));

  // The policy's denies by deciding rule (policy.<rule>.denied; "special" = built-in denies).
  var rows = Object.keys(v).filter(function (k) { return /^policy\..+\.denied$/.test(k); }).map(function (k) {
    var rule = k.slice('policy.'.length, -'.denied'.length);
    var r = last(rates(function (x) { return num(x, k); }));
    return '<tr><th>' + esc(rule) + '</th><td>' + fmtCount(num(v, k)) + '</td><td>' + fmtCount(r) + '</td></tr>';
  });
  setHtml(byId('policy-rules'), rows.length
    ? '<table><thead><tr><th>policy rule</th><th>denied</th><th>per s</th></tr></thead><tbody>' + rows.join('') + '</tbody></table>'
    : '<p class="note">No destination policy counters.</p>');
}

var HOST_COLUMNS = [
  { key: 'host', label: 'original destination', fmt: function (x) { return x; } },
  { key: 'active', label: 'active', fmt: fmtCount },
  { key: 'total', label: 'total', fmt: fmtCount },
  { key: 'failures', label: 'failures', fmt: fmtCount },
  { key: 'bytes', label: 'bytes', fmt: fmtBytes },
  { key: 'connect_p50', label: 'connect p50 (ms)', fmt: fmtMs },
  { key: 'connect_p99', label: 'connect p99 (ms)', fmt: fmtMs },
  { key: 'ttfb_p99', label: 'ttfb p99 (ms)', fmt: fmtMs }
];

function hostRows() {
  var hosts = (state.clusters && state.clusters.hosts) || [];
  var lat = (state.latency && state.latency.hosts) || {};
  return hosts.map(function (h) {
    var s = h.stats || {};
    var l = lat[h.address];
    // Hosts without a histogram slot of their own (docs/LATENCY.md) have no per-host percentiles.
    var p = function (metric, key) { return l && l[metric] && l[metric].count > 0 ? l[metric][key] : NaN; };
    return {
      host: h.address,
      active: num(s, 'cx_active'),
      total: num(s, 'cx_total'),
      failures: num(s, 'cx_connect_fail') + num(s, 'cx_connect_timeout') + num(s, 'cx_overflow'),
      bytes: num(s, 'rx_bytes') + num(s, 'tx_bytes'),
      connect_p50: p('connect', 'p50'),
      connect_p99: p('connect', 'p99'),
      ttfb_p99: p('ttfb', 'p99')
    };
  });
}

function compareRows(a, b) {
  var k = state.sortKey, x = a[k], y = b[k];
  if (k === 'host') return state.sortDir * String(x).localeCompare(String(y));
  // Missing figures (NaN) sort last either way.
  var xn = isNaN(x), yn = isNaN(y);
  if (xn || yn) return xn === yn ? 0 : xn ? 1 : -1;
  return state.sortDir * (x - y) || a.host.localeCompare(b.host);
}

function renderHosts() {
  var all = hostRows();
  var needle = state.filter.trim().toLowerCase();
  var shown = all.filter(function (r) { return needle === '' || r.host.toLowerCase().indexOf(needle) >= 0; }).sort(compareRows);
  var total = shown.length;
  shown = shown.slice(0, S.maxHostRows);
  var head = byId('hosts-head');
  head.querySelectorAll('th').forEach(function (th) {
    var key = th.getAttribute('data-key');
    th.className = key === state.sortKey ? (state.sortDir < 0 ? 'sorted desc' : 'sorted asc') : '';
  });
  var html = shown.map(function (r) {
    return '<tr data-host="' + esc(r.host) + '">' + HOST_COLUMNS.map(function (c) {
      return '<td data-col="' + c.key + '">' + esc(c.fmt(r[c.key])) + '</td>';
    }).join('') + '</tr>';
  }).join('');
  setHtml(byId('hosts-body'), html || '<tr><td colspan="' + HOST_COLUMNS.length + '" class="note">' + (all.length ? 'No host matches the filter.' : 'No destinations yet.') + '</td></tr>');
  setText('hosts-count', all.length === 0 ? '' : 'showing ' + shown.length + ' of ' + total + (needle ? ' matching (' + all.length + ' hosts)' : ' hosts'));
}

function renderLatency() {
  var plots = (state.plots && state.plots.plots) || [];
  var global = (state.latency && state.latency.global) || {};
  plots.forEach(function (p) {
    var card = byId('plot-' + p.metric);
    if (!card) return;
    setHtml(card.querySelector('.plot'), p.svg);
    var g = global[p.metric];
    var figures = g && g.count > 0 ? 'n ' + fmtCount(g.count) + ' \u00b7 p50 ' + fmtMs(g.p50) + ' ms \u00b7 p99 ' + fmtMs(g.p99) + ' ms \u00b7 max ' + fmtMs(g.max) + ' ms' : 'no samples yet';
    card.querySelector('.figures').textContent = figures;
    card.querySelector('.what').textContent = p.description;
  });
}

function policyText(p) {
  var scope = p.scope === 'listener' ? 'own policy' : 'top-level policy';
  var rules = p.rules.length === 0 ? 'no rules' : p.rules.length + (p.rules.length === 1 ? ' rule' : ' rules') + ' (' + p.rules.join(', ') + ')';
  return scope + ': ' + rules + ', default ' + p.default_action + (p.deny_special ? ', special denies on' : ', special denies off');
}

// A listener's counter in /stats: listener.<name>.<stat> (docs: the stats reference).
function listenerKey(name, stat) { return 'listener.' + name + '.' + stat; }
var LISTENER_REFUSALS = ['policy_denied', 'loop_rejected', 'no_original_dst', 'downstream_cx_overflow'];

function renderListeners() {
  var listeners = (state.info && state.info.listeners) || [];
  var v = state.samples.length ? state.samples[state.samples.length - 1].v : {};
  var html = listeners.map(function (l) {
    var mode = l.mode + (l.transparent ? ' \u00b7 transparent' : '') + (l.proxy_protocol !== 'off' ? ' \u00b7 PROXY ' + l.proxy_protocol : '');
    var key = function (stat) { return listenerKey(l.name, stat); };
    // A listener the data plane does not report (yet: its generation is starting) shows "-".
    var known = v[key('downstream_cx_total')] !== undefined;
    var cell = function (col, text) { return '<td data-col="' + col + '">' + (known ? text : '-') + '</td>'; };
    var cps = last(rates(function (x) { return num(x, key('downstream_cx_total')); }));
    var refused = LISTENER_REFUSALS.reduce(function (sum, stat) { return sum + num(v, key(stat)); }, 0);
    return '<tr data-listener="' + esc(l.name) + '"><th>' + esc(l.name) + '</th><td class="text">' + esc(mode) + '</td><td class="text">' + esc(l.address) + '</td>' +
      cell('accepted_per_s', fmtCount(cps)) + cell('accepted', fmtCount(num(v, key('downstream_cx_total')))) +
      cell('active', fmtCount(num(v, key('downstream_cx_active')))) + cell('refused', fmtCount(refused)) +
      '<td class="text">' + esc(policyText(l.policy)) + '</td></tr>';
  }).join('');
  setHtml(byId('listeners-body'), html || '<tr><td colspan="8" class="note">No listener information (GET ' + esc(E.serverInfo) + ').</td></tr>');
}

function renderStatus() {
  var el = byId('status');
  var span = state.samples.length > 1 ? state.samples[state.samples.length - 1].t - state.samples[0].t : 0;
  var base = 'updated ' + new Date().toLocaleTimeString() + ' \u00b7 every ' + S.pollMs / 1000 + ' s \u00b7 ' + state.samples.length + ' samples over ' + fmtDuration(span / 1000);
  if (state.failed.length) {
    el.textContent = base + ' \u00b7 failed: ' + state.failed.join('; ');
    el.setAttribute('data-state', 'error');
  } else {
    el.textContent = base;
    el.setAttribute('data-state', 'ok');
  }
  el.setAttribute('data-updates', String(state.updates));
}

function render() {
  // One section's bad data must not blank the others.
  [renderHeader, renderTraffic, renderHosts, renderLatency, renderListeners, renderStatus].forEach(function (f) {
    try { f(); } catch (e) { state.failed.push(f.name + ': ' + (e && e.message)); }
  });
}

async function update() {
  var names = ['stats', 'serverInfo', 'clusters', 'latency', 'plots', 'ready'];
  var results = await Promise.allSettled([
    fetchJson(E.stats), fetchJson(E.serverInfo), fetchJson(E.clusters), fetchJson(E.latency), fetchJson(E.plots), fetchText(E.ready)
  ]);
  var now = Date.now();
  state.failed = [];
  results.forEach(function (r, i) {
    if (r.status === 'rejected') state.failed.push(E[names[i]] + ': ' + (r.reason && r.reason.message));
  });
  var value = function (i) { return results[i].status === 'fulfilled' ? results[i].value : null; };
  if (value(0)) {
    state.samples.push({ t: now, v: value(0) });
    while (state.samples.length && now - state.samples[0].t > S.windowMs) state.samples.shift();
  }
  state.info = value(1);
  state.clusters = value(2) || state.clusters;
  state.latency = value(3) || state.latency;
  state.plots = value(4) || state.plots;
  state.ready = value(5);
  state.updates += 1;
  render();
}

function loop() {
  update().catch(function (e) { state.failed = [String(e && e.message)]; renderStatus(); }).finally(function () { setTimeout(loop, S.pollMs); });
}

window.addEventListener('error', function (e) {
  var el = byId('status');
  el.textContent = 'page error: ' + e.message;
  el.setAttribute('data-state', 'error');
});

// The table's view lives in the URL's fragment (#filter=...&sort=total&dir=desc), so a view can be
// bookmarked or linked; the fragment never reaches the server.
function readView() {
  var params = new URLSearchParams(location.hash.slice(1));
  var key = params.get('sort');
  if (key && HOST_COLUMNS.some(function (c) { return c.key === key; })) state.sortKey = key;
  var dir = params.get('dir');
  if (dir === 'asc' || dir === 'desc') state.sortDir = dir === 'asc' ? 1 : -1;
  state.filter = params.get('filter') || '';
  byId('hosts-filter').value = state.filter;
}

function writeView() {
  var params = new URLSearchParams();
  if (state.filter) params.set('filter', state.filter);
  params.set('sort', state.sortKey);
  params.set('dir', state.sortDir < 0 ? 'desc' : 'asc');
  history.replaceState(null, '', '#' + params.toString());
}

byId('hosts-head').addEventListener('click', function (e) {
  var th = e.target.closest('th');
  var key = th && th.getAttribute('data-key');
  if (!key) return;
  if (state.sortKey === key) state.sortDir = -state.sortDir;
  else { state.sortKey = key; state.sortDir = key === 'host' ? 1 : -1; }
  writeView();
  renderHosts();
});
byId('hosts-filter').addEventListener('input', function (e) {
  state.filter = e.target.value;
  writeView();
  renderHosts();
});
readView();
loop();
`;
