// The Envoy bootstrap converter (src/envoy/): every mapped field, what is dropped with its path
// (warnings) or refused (errors), lenient mode, and the `--envoy` CLI surface.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { ConfigError } from '../src/config/load';
import { convertEnvoyText, type EnvoyLoad } from '../src/envoy/load';

const ROOT = join(__dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli.js');
const EXAMPLE = join(ROOT, 'examples', 'envoy-original-dst.yaml');

const T = {
  odst: 'type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst',
  osrc: 'type.googleapis.com/envoy.extensions.filters.listener.original_src.v3.OriginalSrc',
  tcp: 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
  hcm: 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
  router: 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
  rbac: 'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC',
  extAuthz: 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz',
  tls: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
};

type Obj = Record<string, any>; // test fixtures: free-form Envoy YAML trees

const sock = (address: string, port: number): Obj => ({ socket_address: { address, port_value: port } });

function tcpListener(extra: Obj = {}, tcpExtra: Obj = {}): Obj {
  return {
    name: 'egress',
    address: sock('0.0.0.0', 9000),
    listener_filters: [{ name: 'envoy.filters.listener.original_dst', typed_config: { '@type': T.odst } }],
    filter_chains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': T.tcp, cluster: 'odc', ...tcpExtra } }] }],
    ...extra,
  };
}

function httpListener(hcmExtra: Obj = {}): Obj {
  return {
    name: 'http',
    address: sock('0.0.0.0', 9001),
    filter_chains: [
      {
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typed_config: {
              '@type': T.hcm,
              route_config: { name: 'r', virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'odc' } }] }] },
              http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': T.router } }],
              ...hcmExtra,
            },
          },
        ],
      },
    ],
  };
}

function cluster(extra: Obj = {}): Obj {
  return { name: 'odc', type: 'ORIGINAL_DST', lb_policy: 'CLUSTER_PROVIDED', connect_timeout: '6s', original_dst_lb_config: { use_http_header: true }, ...extra };
}

function bootstrap(listeners: Obj[], clusters: Obj[] = [cluster()], extra: Obj = {}): Obj {
  return { admin: { address: sock('127.0.0.1', 9901) }, static_resources: { listeners, clusters }, ...extra };
}

function convert(doc: Obj, lenient = false): EnvoyLoad {
  return convertEnvoyText(stringify(doc), 'envoy.yaml', lenient);
}

/** The ConfigError's "path: message" lines (convert must refuse). */
function refused(doc: Obj, lenient = false): string[] {
  try {
    convert(doc, lenient);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems.map((p) => `${p.path}: ${p.message}`);
  }
  assert.fail('the conversion was accepted');
}

const warningPaths = (r: EnvoyLoad): string[] => r.warnings.map((w) => w.path);

test('the seed example: 9000 original_dst relay, 9001 http routed by x-envoy-original-dst-host, admin, connect_timeout', () => {
  const r = convertEnvoyText(readFileSync(EXAMPLE, 'utf8'), EXAMPLE, false);
  const [relay, http] = r.config.listeners;
  assert.equal(r.config.listeners.length, 2);
  assert.deepEqual([relay?.name, relay?.mode, relay?.address.text, relay?.transparent], ['listener_0', 'original_dst', '0.0.0.0:9000', false]);
  assert.deepEqual([http?.name, http?.mode, http?.address.text], ['listener_1', 'http', '0.0.0.0:9001']);
  assert.equal(http?.http?.headerName, 'x-envoy-original-dst-host');
  // Envoy honours the header from anyone: so does the conversion, and says so.
  assert.deepEqual(http?.http?.trustedSources.map((c) => c.text), ['0.0.0.0/0', '::/0']);
  assert.equal(http?.http?.connect, false, 'no CONNECT upgrade config: Envoy refuses CONNECT, so does the conversion');
  assert.equal(r.config.admin.address.text, '127.0.0.1:9901');
  assert.equal(r.config.cluster.connectTimeoutMs, 6000);
  assert.deepEqual(warningPaths(r), [
    'static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix',
    'static_resources.listeners[1].filter_chains[0].filters[0].typed_config.stat_prefix',
    'static_resources.clusters[0].original_dst_lb_config.use_http_header',
  ]);
  assert.match(r.warnings[2]?.message ?? '', /honoured from every client/);
  // The printed YAML is the same config again.
  assert.deepEqual(parse(r.yaml).listeners[1].http.trusted_sources, ['0.0.0.0/0', '::/0']);
});

test('cluster fields: connect_timeout, cleanup_interval, upstream_port_override, circuit breakers, SO_MARK', () => {
  const c = cluster({
    connect_timeout: '0.25s',
    cleanup_interval: { seconds: 30 },
    original_dst_lb_config: { use_http_header: true, http_header_name: 'X-Dst', upstream_port_override: { value: 8080 } },
    circuit_breakers: {
      thresholds: [
        { priority: 'DEFAULT', max_connections: 500, max_pending_requests: 50, max_requests: 9 },
        { priority: 'HIGH', max_connections: 1 },
      ],
      per_host_thresholds: [{ max_connections: 20 }],
    },
    upstream_bind_config: { source_address: { address: '0.0.0.0', port_value: 0 }, socket_options: [{ level: 1, name: 36, int_value: 256 }] },
  });
  const r = convert(bootstrap([tcpListener(), httpListener()], [c]));
  const cl = r.config.cluster;
  assert.equal(cl.connectTimeoutMs, 250);
  assert.equal(cl.cleanupIntervalMs, 30_000);
  assert.equal(cl.upstreamPortOverride, 8080);
  assert.equal(cl.maxDownstreamConnections, 500);
  assert.equal(cl.maxPendingPerHost, 50);
  assert.equal(cl.maxConnectionsPerHost, 20);
  assert.equal(cl.upstreamMark, 256);
  assert.equal(r.config.listeners[1]?.http?.headerName, 'x-dst');
  const w = warningPaths(r);
  for (const path of [
    'static_resources.clusters[0].circuit_breakers.thresholds[0].max_requests',
    'static_resources.clusters[0].circuit_breakers.thresholds[0].max_pending_requests',
    'static_resources.clusters[0].circuit_breakers.thresholds[1]',
    'static_resources.clusters[0].upstream_bind_config.source_address',
  ]) {
    assert.ok(w.includes(path), `no warning at ${path}: ${w.join(', ')}`);
  }
});

test('listener fields: transparent, use_original_dst, tcp_backlog_size, tcp_proxy idle_timeout, original_src with its mark', () => {
  const tproxy = tcpListener({ name: 'tp', transparent: true, listener_filters: undefined, tcp_backlog_size: 128 }, { idle_timeout: '90s' });
  delete tproxy['listener_filters'];
  const redirected = tcpListener({
    name: 'rd',
    address: sock('127.0.0.1', 9002),
    use_original_dst: true,
    listener_filters: [{ name: 'x', typed_config: { '@type': T.osrc, mark: 123 } }],
  });
  const r = convert(bootstrap([tproxy, redirected]));
  const [tp, rd] = r.config.listeners;
  assert.deepEqual([tp?.mode, tp?.transparent, tp?.backlog], ['original_dst', true, 128]);
  assert.deepEqual([rd?.mode, rd?.transparent, rd?.address.text], ['original_dst', false, '127.0.0.1:9002']);
  assert.equal(r.config.cluster.idleTimeoutMs, 90_000);
  assert.equal(r.config.cluster.originalSource, true);
  assert.equal(r.config.cluster.upstreamMark, 123);
});

test('http_connection_manager fields: CONNECT upgrade, request_headers_timeout, max_request_headers_kb, use_http_header false', () => {
  const c = cluster({ original_dst_lb_config: { use_http_header: false } });
  const l = httpListener({ upgrade_configs: [{ upgrade_type: 'CONNECT' }, { upgrade_type: 'websocket' }], request_headers_timeout: '3s', max_request_headers_kb: 96 });
  const r = convert(bootstrap([l], [c]));
  const http = r.config.listeners[0]?.http;
  assert.equal(http?.connect, true);
  assert.equal(http?.requestHeadTimeoutMs, 3000);
  assert.equal(http?.maxRequestHeadBytes, 96 * 1024);
  // Without use_http_header Envoy routes by the connection's original destination only: nobody's header counts.
  assert.deepEqual(http?.trustedSources, []);
  assert.ok(!warningPaths(r).some((p) => p.endsWith('use_http_header')));
  // ...and so nobody's CONNECT either (Envoy would tunnel it to the original destination): said.
  const connectWarning = r.warnings.find((w) => w.path.endsWith('upgrade_configs'));
  assert.match(connectWarning?.message ?? '', /every CONNECT gets 403 connect_untrusted/);
  const withHeader = convert(bootstrap([l], [cluster({ original_dst_lb_config: { use_http_header: true } })]));
  assert.ok(!warningPaths(withHeader).some((p) => p.endsWith('upgrade_configs')), 'trusted clients may CONNECT: no warning');
});

test('admin: the address maps, the access log is dropped with its path', () => {
  const r = convert(bootstrap([tcpListener()], [cluster()], { admin: { access_log_path: '/dev/null', address: sock('::1', 9911) } }));
  assert.equal(r.config.admin.address.text, '[::1]:9911');
  assert.ok(warningPaths(r).includes('admin.access_log_path'));
  // Envoy without admin opens no admin port; the converted config has splicegate's default one.
  const doc = bootstrap([tcpListener()]);
  delete doc['admin'];
  const none = convert(doc);
  assert.equal(none.config.admin.address.text, '127.0.0.1:9901');
  assert.match(none.warnings.find((w) => w.path === 'admin')?.message ?? '', /^absent: splicegate's admin endpoint listens on its default, 127\.0\.0\.1:9901$/);
});

test('routing/security settings are errors with their paths, all listed at once', () => {
  const rbacListener = tcpListener({ name: 'rbac' });
  rbacListener['filter_chains'][0].filters.unshift({ name: 'envoy.filters.network.rbac', typed_config: { '@type': T.rbac, stat_prefix: 'x' } });
  rbacListener['filter_chains'][0].transport_socket = { name: 'tls', typed_config: { '@type': T.tls } };
  const authz = httpListener();
  authz['filter_chains'][0].filters[0].typed_config.http_filters.unshift({ name: 'envoy.filters.http.ext_authz', typed_config: { '@type': T.extAuthz } });
  const lines = refused(bootstrap([rbacListener, authz], [cluster(), { name: 'static', type: 'STATIC', connect_timeout: '1s' }]));
  const expect = [
    /^static_resources\.clusters\[1\]\.type: cluster "static" has type "STATIC": only ORIGINAL_DST clusters map/,
    /^static_resources\.listeners\[0\]\.filter_chains\[0\]\.filters\[0\]: network filter type\.googleapis\.com\/envoy\.extensions\.filters\.network\.rbac\.v3\.RBAC is not supported/,
    /^static_resources\.listeners\[0\]\.filter_chains\[0\]\.transport_socket: TLS termination is not supported/,
    /^static_resources\.listeners\[1\]\.filter_chains\[0\]\.filters\[0\]\.typed_config\.http_filters\[0\]: HTTP filter .*ext_authz.* is not supported/,
    /^\(root\): not converted: .*--envoy-lenient/,
  ];
  assert.equal(lines.length, expect.length, lines.join('\n'));
  expect.forEach((re, i) => assert.match(lines[i] ?? '', re));
});

test('lenient: the same file converts, each skipped item a warning at its path', () => {
  const rbacListener = tcpListener();
  rbacListener['filter_chains'][0].filters.unshift({ name: 'envoy.filters.network.rbac', typed_config: { '@type': T.rbac } });
  const toStatic = tcpListener({ name: 'other', address: sock('0.0.0.0', 9005) }, { cluster: 'static' });
  const r = convert(bootstrap([rbacListener, toStatic], [cluster(), { name: 'static', type: 'STRICT_DNS' }]), true);
  assert.deepEqual(r.config.listeners.map((l) => l.name), ['egress'], 'the listener routed to a STRICT_DNS cluster is left out');
  const skipped = r.warnings.filter((w) => w.message.endsWith('(skipped: --envoy-lenient)')).map((w) => w.path);
  assert.deepEqual(skipped, [
    'static_resources.clusters[1].type',
    'static_resources.listeners[0].filter_chains[0].filters[0]',
    'static_resources.listeners[1].filter_chains[0].filters[0].typed_config.cluster',
  ]);
});

test('filters are matched by their exact @type: a v2 URL, a near miss and a missing type are refused', () => {
  const v2 = tcpListener();
  v2['filter_chains'][0].filters[0].typed_config['@type'] = 'type.googleapis.com/envoy.config.filter.network.tcp_proxy.v2.TcpProxy';
  assert.match(refused(bootstrap([v2]))[0] ?? '', /typed_config\.@type: .* is an Envoy v2 type/);
  const nearMiss = tcpListener();
  nearMiss['filter_chains'][0].filters[0].typed_config['@type'] = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxyX';
  assert.match(refused(bootstrap([nearMiss]))[0] ?? '', /filters\[0\]: network filter .*TcpProxyX is not supported/);
  const untyped = tcpListener();
  delete untyped['filter_chains'][0].filters[0].typed_config;
  assert.match(refused(bootstrap([untyped]))[0] ?? '', /filters\[0\]: filter "envoy\.filters\.network\.tcp_proxy" has no typed_config/);
});

test('a tcp_proxy listener without original_dst, use_original_dst or transparent is refused', () => {
  const l = tcpListener();
  delete l['listener_filters'];
  assert.match(refused(bootstrap([l]))[0] ?? '', /^static_resources\.listeners\[0\]: tcp_proxy to an ORIGINAL_DST cluster without the original_dst listener filter/);
});

test('splicegate has one cluster: conflicting ORIGINAL_DST cluster settings are an error', () => {
  const a = tcpListener({}, { cluster: 'odc' });
  const b = tcpListener({ name: 'b', address: sock('0.0.0.0', 9003) }, { cluster: 'odc2' });
  const lines = refused(bootstrap([a, b], [cluster(), cluster({ name: 'odc2', connect_timeout: '2s' })]));
  assert.match(lines[0] ?? '', /^static_resources\.clusters\[1\]\.connect_timeout: conflicts with static_resources\.clusters\[0\]\.connect_timeout/);
});

test('a YAML that is not an Envoy bootstrap says so', () => {
  assert.deepEqual(refused({ listeners: [{ name: 'a', address: '0.0.0.0:1' }] }), ['(root): not an Envoy bootstrap: this looks like a splicegate config (top-level "listeners"); pass it with --config']);
  assert.deepEqual(refused({ node: { id: 'x' } }), ['(root): not an Envoy v3 bootstrap: it has no static_resources']);
  assert.match(refused({ dynamic_resources: { ads_config: {} } })[0] ?? '', /^dynamic_resources: not supported: splicegate reads static_resources only/);
  assert.throws(() => convertEnvoyText('- just\n- a list\n', 'x.yaml', false), (err: unknown) => err instanceof ConfigError && /not an Envoy bootstrap/.test(err.message));
});

test('an Envoy file nested too deeply is refused by its depth, not by a stack overflow', () => {
  for (let round = 0; round < 3; round++) {
    assert.throws(
      () => convertEnvoyText(`static_resources: ${'['.repeat(20_000)}${']'.repeat(20_000)}\n`, 'deep.yaml', false),
      (err: unknown) => err instanceof ConfigError && /^deep\.yaml: \(root\): YAML nested more than \d+ levels deep.*\(line 1, column \d+\)$/.test(err.message),
    );
  }
});

test('an Envoy file with a list as a mapping key is refused at its line, with no Node warning', () => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(w.message);
  process.on('warning', onWarning);
  try {
    assert.throws(
      () => convertEnvoyText('static_resources:\n  ? [listeners]\n  : []\n', 'keys.yaml', false),
      (err: unknown) => err instanceof ConfigError && /^keys\.yaml: \(root\): a mapping key must be a plain value, not a list \(line 2, column 5\)$/.test(err.message),
    );
  } finally {
    process.off('warning', onWarning);
  }
  assert.deepEqual(warnings, []);
});

test('an Envoy file whose alias stands inside the value its own anchor names is refused, not expanded until memory runs out', () => {
  assert.throws(
    () => convertEnvoyText('static_resources: &s {listeners: [*s]}\n', 'cycle.yaml', false),
    (err: unknown) => err instanceof ConfigError && /^cycle\.yaml: \(root\): the alias \*s stands inside the value its anchor &s names.*\(line 1, column 35\)$/.test(err.message),
  );
});

test("an Envoy file with YAML's own types (!!omap, !!set) is refused at their paths, not read as empty mappings", () => {
  const text = readFileSync(EXAMPLE, 'utf8').replace(/^admin:/m, 'admin: !!omap\n  - x: 1\nignored:');
  assert.throws(
    () => convertEnvoyText(text, 'typed.yaml', false),
    (err: unknown) => err instanceof ConfigError && /^typed\.yaml: admin: got an ordered mapping \(!!omap\): YAML's own types have no meaning in a config.*\(line \d+, column \d+\)$/.test(err.message),
  );
  assert.throws(
    () => convertEnvoyText('static_resources: !!set {listeners}\n', 'set.yaml', false),
    (err: unknown) => err instanceof ConfigError && /^set\.yaml: static_resources: got a set \(!!set\)/.test(err.message),
  );
});

test('what splicegate itself refuses after the mapping is reported against the converted config', () => {
  const c = cluster({ original_dst_lb_config: { upstream_port_override: 9000 } });
  const lines = refused(bootstrap([tcpListener()], [c]));
  assert.match(lines[0] ?? '', /^cluster\.upstream_port_override: 9000 is the port of listeners\[0\]/);
});

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env['SPLICEGATE_DEBUG'];
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env, timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('cli: convert prints YAML that validate --config accepts; warnings on stderr', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-envoy-'));
  try {
    const run = cli('convert', '--envoy', EXAMPLE);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stderr.trimEnd().split('\n').length, 3, run.stderr);
    assert.match(run.stderr, /: warning: static_resources\.listeners\[0\]\.filter_chains\[0\]\.filters\[0\]\.typed_config\.stat_prefix: ignored/);
    const file = join(dir, 'converted.yaml');
    writeFileSync(file, run.stdout);
    const validated = cli('validate', '--config', file);
    assert.equal(validated.status, 0, validated.stderr);
    assert.match(validated.stdout, /OK \(2 listeners,/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('cli: an unconvertible file exits 2 with paths and lines, no stack trace; lenient runs it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-envoy-'));
  try {
    const l = tcpListener();
    l['filter_chains'][0].filters.unshift({ name: 'envoy.filters.network.rbac', typed_config: { '@type': T.rbac } });
    const file = join(dir, 'envoy.yaml');
    writeFileSync(file, stringify(bootstrap([l])));
    const strict = cli('validate', '--envoy', file);
    assert.equal(strict.status, 2);
    assert.match(strict.stderr, /envoy\.yaml: static_resources\.listeners\[0\]\.filter_chains\[0\]\.filters\[0\]: network filter .*RBAC is not supported .*\(line \d+, column \d+\)/);
    assert.doesNotMatch(strict.stderr, /\n\s+at /);
    const lenient = cli('validate', '--envoy', file, '--envoy-lenient');
    assert.equal(lenient.status, 0, lenient.stderr);
    assert.match(lenient.stderr, /warning: static_resources\.listeners\[0\]\.filter_chains\[0\]\.filters\[0\]: .*\(skipped: --envoy-lenient\)/);
    assert.equal(cli('validate', '--envoy', file, '--config', file).status, 2, '--config and --envoy together');
    assert.equal(cli('validate', '--config', EXAMPLE, '--envoy-lenient').status, 2, '--envoy-lenient without --envoy');
    // The schema's own warnings name the converted config's paths, and say so.
    const noHeader = join(dir, 'no-header.yaml');
    writeFileSync(noHeader, stringify(bootstrap([httpListener()], [cluster({ original_dst_lb_config: { use_http_header: false } })])));
    const converted = cli('validate', '--envoy', noHeader);
    assert.equal(converted.status, 0, converted.stderr);
    assert.match(converted.stderr, /no-header\.yaml \(converted\): warning: listeners\[0\]\.http\.trusted_sources: empty/);
    const missing = cli('run', '--envoy', join(dir, 'nope.yaml'));
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /nope\.yaml: \(root\): cannot read config file: ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('review: nothing that changes where traffic goes is dropped silently (routes, CONNECT, address keys, booleans, circuit breaker 0)', () => {
  // An HCM without any route: Envoy answers 404; the listener was silently left out before.
  const noRoutes = httpListener({ route_config: { name: 'r', virtual_hosts: [{ name: 'all', domains: ['*'], routes: [] }] } });
  assert.match(refused(bootstrap([tcpListener(), noRoutes]))[0] ?? '', /^static_resources\.listeners\[1\]\.filter_chains\[0\]\.filters\[0\]\.typed_config\.route_config: no route: not converted/);
  const noVhosts = httpListener({ route_config: { name: 'r', virtual_hosts: [] } });
  assert.match(refused(bootstrap([tcpListener(), noVhosts]))[0] ?? '', /route_config: no route: not converted/);

  // Lenient: a listener with one route elsewhere is left out (docs/ENVOY.md), not sent all to the original destination.
  const partial = httpListener({
    route_config: {
      virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'odc' } }, { match: { prefix: '/' }, route: { cluster: 'static' } }] }],
    },
  });
  const lenient = convert(bootstrap([tcpListener(), partial], [cluster(), { name: 'static', type: 'STATIC' }]), true);
  assert.deepEqual(lenient.config.listeners.map((l) => l.name), ['egress']);

  // upgrade_configs enabled: false keeps CONNECT refused; upgrade filters are an error.
  const off = convert(bootstrap([httpListener({ upgrade_configs: [{ upgrade_type: 'CONNECT', enabled: false }] })]));
  assert.equal(off.config.listeners[0]?.http?.connect, false);
  const wrapped = convert(bootstrap([httpListener({ upgrade_configs: [{ upgrade_type: 'CONNECT', enabled: { value: true } }] })]));
  assert.equal(wrapped.config.listeners[0]?.http?.connect, true);
  assert.match(
    refused(bootstrap([httpListener({ upgrade_configs: [{ upgrade_type: 'websocket', filters: [] }] })]))[0] ?? '',
    /upgrade_configs\[0\]\.filters: not supported/,
  );

  // A route that turns CONNECT off (or on) against the HCM's setting is refused; a websocket one is ignored.
  const perRoute = (upgrade: Obj): Obj =>
    httpListener({
      upgrade_configs: [{ upgrade_type: 'CONNECT' }],
      route_config: { virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { connect_matcher: {} }, route: { cluster: 'odc', upgrade_configs: [upgrade] } }] }] },
    });
  assert.match(refused(bootstrap([perRoute({ upgrade_type: 'CONNECT', enabled: false })]))[0] ?? '', /routes\[0\]\.route\.upgrade_configs: a per-route CONNECT setting is not supported/);
  assert.equal(convert(bootstrap([perRoute({ upgrade_type: 'websocket', enabled: false })])).config.listeners[0]?.http?.connect, true);

  // socket_address keys that change where the socket is: ipv4_compat on "::", a network namespace.
  const compat = tcpListener({ address: { socket_address: { address: '::', port_value: 9000, ipv4_compat: true } } });
  assert.match(refused(bootstrap([compat]))[0] ?? '', /listeners\[0\]\.address: ipv4_compat is not supported/);
  assert.equal(convert(bootstrap([tcpListener({ address: { socket_address: { address: '::', port_value: 9000, ipv4_compat: false } } })])).config.listeners[0]?.address.text, '[::]:9000');
  const netns = tcpListener({ address: { socket_address: { address: '0.0.0.0', port_value: 9000, network_namespace_filepath: '/run/netns/x' } } });
  assert.match(refused(bootstrap([netns]))[0] ?? '', /address: socket_address\.network_namespace_filepath: not supported/);

  // A boolean Envoy would refuse is not read as false.
  assert.match(refused(bootstrap([tcpListener({ transparent: 'true' })]))[0] ?? '', /listeners\[0\]\.transparent: expected true or false, got "true"/);
  const tp = tcpListener({ transparent: { value: true } });
  delete tp['listener_filters'];
  assert.equal(convert(bootstrap([tp])).config.listeners[0]?.transparent, true);

  // Envoy's max_connections 0 lets nothing through; splicegate's 0 is "no bound".
  for (const breakers of [{ thresholds: [{ max_connections: 0 }] }, { thresholds: [{ max_pending_requests: '0' }] }, { per_host_thresholds: [{ max_connections: 0 }] }]) {
    assert.match(refused(bootstrap([tcpListener()], [cluster({ circuit_breakers: breakers })]))[0] ?? '', /: 0 cannot be mapped: in Envoy it lets no connection through/);
  }

  // Two clusters of one name: Envoy refuses the file; the converter does not pick one.
  const dup = refused(bootstrap([tcpListener()], [cluster(), cluster({ connect_timeout: '6s' })]));
  assert.match(dup[0] ?? '', /^static_resources\.clusters\[1\]\.name: duplicate cluster name "odc" \(also static_resources\.clusters\[0\]\)/);

  // A listener renamed to avoid a clash says so.
  const clash = convert(bootstrap([tcpListener({ name: 'bad name' }), tcpListener({ name: 'listener_0', address: sock('0.0.0.0', 9002) })]));
  assert.deepEqual(clash.config.listeners.map((l) => l.name), ['listener_0', 'listener_0-2']);
  assert.ok(warningPaths(clash).includes('static_resources.listeners[1].name'), warningPaths(clash).join(', '));
});

test('review: a key or @type from the file cannot add lines to the printed config or to the findings', () => {
  // A top-level key is only a warning, so it reaches convert's YAML header; its newline used to
  // start a line there, and the printed config (not the one run --envoy runs) listened on 0.0.0.0.
  const doc = bootstrap([tcpListener()]);
  delete doc['admin'];
  doc['x\nadmin:\n  address: 0.0.0.0:9901 #'] = 1;
  const rbac = tcpListener({ name: 'rbac', address: sock('0.0.0.0', 9002) });
  rbac['filter_chains'][0].filters.unshift({ name: 'x', typed_config: { '@type': 'evil\nworkers: 1 #\u2028' } });
  doc['static_resources'].listeners.push(rbac);
  const r = convert(doc, true);
  const printed: Obj = parse(r.yaml);
  assert.equal(printed['admin'], undefined, r.yaml);
  assert.equal(printed['workers'], undefined, r.yaml);
  assert.equal(r.config.admin.address.text, '127.0.0.1:9901');
  for (const w of r.warnings) assert.doesNotMatch(`${w.path}: ${w.message}`, /[\n\r\u2028]/);
  assert.ok(warningPaths(r).includes('["x\\nadmin:\\n  address: 0.0.0.0:9901 #"]'), warningPaths(r).join(', '));
  assert.ok(r.warnings.some((w) => w.message.includes('evil\\u000aworkers: 1 #\\u2028')), r.warnings.map((w) => w.message).join('\n'));
});

test('review: a JSON file converts like YAML; lowerCamelCase names (which Envoy reads) are refused, not dropped', () => {
  const json = (doc: Obj): string[] => {
    try {
      convertEnvoyText(JSON.stringify(doc), 'envoy.json', false);
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      return err.problems.map((p) => `${p.path}: ${p.message}`);
    }
    return [];
  };
  assert.deepEqual(json(bootstrap([tcpListener()])), []);
  // Envoy applies these limits; the converter used to drop them with an "ignored" warning.
  const lines = json(bootstrap([tcpListener()], [cluster({ circuit_breakers: { thresholds: [{ maxConnections: 100 }], perHostThresholds: [{ max_connections: 5 }] } })]));
  assert.match(lines[0] ?? '', /^static_resources\.clusters\[0\]\.circuit_breakers\.thresholds\[0\]\.maxConnections: a lowerCamelCase name .* write max_connections$/);
  assert.match(lines[1] ?? '', /circuit_breakers\.perHostThresholds: a lowerCamelCase name .* write per_host_thresholds$/);
  assert.match(json({ staticResources: {} })[0] ?? '', /^staticResources: protobuf JSON lowerCamelCase names are not read/);
  // Keys the user names (metadata) are not Envoy fields: left alone.
  assert.deepEqual(json(bootstrap([tcpListener({ metadata: { filter_metadata: { myApp: { someKey: 1 } } } })])), []);
});

test('no input throws anything but a ConfigError: every node of the example replaced by odd values', () => {
  const base: unknown = parse(readFileSync(EXAMPLE, 'utf8'));
  const odd: unknown[] = [null, -1.5, 'x', [null], {}, { '@type': 5, value: 'y' }];
  const paths: Array<Array<string | number>> = [];
  const walk = (node: unknown, path: Array<string | number>): void => {
    paths.push(path);
    if (Array.isArray(node)) node.forEach((v, i) => walk(v, [...path, i]));
    else if (node !== null && typeof node === 'object') for (const [k, v] of Object.entries(node)) walk(v, [...path, k]);
  };
  walk(base, []);
  let runs = 0;
  for (const path of paths) {
    for (const value of odd) {
      const doc = structuredClone(base) as Obj;
      if (path.length === 0) continue;
      let parent: any = doc;
      for (const seg of path.slice(0, -1)) parent = parent[seg];
      parent[path[path.length - 1] as string | number] = value;
      // Alternate the modes: each path still sees both over its odd values.
      for (const lenient of [runs % 2 === 0]) {
        runs += 1;
        try {
          convertEnvoyText(stringify(doc), 'fuzz.yaml', lenient);
        } catch (err) {
          assert.ok(err instanceof ConfigError, `${path.join('.')} = ${JSON.stringify(value)} (lenient ${lenient}) threw ${String(err)}`);
        }
      }
    }
  }
  assert.ok(runs > 300, `only ${runs} variants`);
});
