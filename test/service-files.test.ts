// The service files under examples/ (systemd units, Kubernetes manifests, Dockerfile) checked
// offline: the manifests against the Kubernetes API schemas bundled in the kubernetes-models
// package (Kubernetes 1.27), each embedded config through `splicegate validate`, each embedded
// `splicegate iptables install` through the same flag checks (as `print`), the units through
// `systemd-analyze verify`, and the operational promises (probes, drain, capabilities) read back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';

const ROOT = join(__dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli.js');
const KUBE = join(ROOT, 'examples', 'kubernetes');
const SYSTEMD = join(ROOT, 'examples', 'systemd');

type Json = Record<string, unknown>;
interface Model {
  validate(): void;
}
type ModelClass = new (data: unknown) => Model;

/**
 * kubernetes-models, loaded at run time so the TypeScript build does not depend on a test-only
 * package. Pinned to 4.x: 5.x is ESM-only and needs Node 22.
 */
function models(): Record<string, ModelClass> {
  let core: Record<string, unknown>;
  let apps: Record<string, unknown>;
  try {
    core = require('kubernetes-models/v1') as Record<string, unknown>;
    apps = require('kubernetes-models/apps/v1') as Record<string, unknown>;
  } catch (err) {
    throw new Error(`the kubernetes-models devDependency is missing (run npm install): ${String(err)}`);
  }
  const pick = (mod: Record<string, unknown>, name: string): ModelClass => {
    const c = mod[name];
    if (typeof c !== 'function') throw new Error(`kubernetes-models has no ${name}`);
    return c as ModelClass;
  };
  return {
    'v1/ConfigMap': pick(core, 'ConfigMap'),
    'v1/Pod': pick(core, 'Pod'),
    'apps/v1/DaemonSet': pick(apps, 'DaemonSet'),
  };
}

function validateObject(doc: Json): void {
  const key = `${String(doc['apiVersion'])}/${String(doc['kind'])}`;
  const Model = models()[key];
  if (Model === undefined) throw new Error(`no schema check for ${key}: add it to models()`);
  new Model(doc).validate();
}

function manifests(): Array<{ file: string; docs: Json[] }> {
  return readdirSync(KUBE)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .map((file) => {
      const docs = parseAllDocuments(readFileSync(join(KUBE, file), 'utf8')).map((d) => {
        assert.equal(d.errors.length, 0, `${file}: ${d.errors.map(String).join('; ')}`);
        return d.toJSON() as Json;
      });
      return { file, docs };
    });
}

function obj(v: unknown, what: string): Json {
  assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v), `${what} is not an object`);
  return v as Json;
}

function list(v: unknown): Json[] {
  return Array.isArray(v) ? (v as Json[]) : [];
}

function podSpecOf(doc: Json): Json {
  const spec = obj(doc['spec'], 'spec');
  return doc['kind'] === 'Pod' ? spec : obj(obj(spec['template'], 'template')['spec'], 'template.spec');
}

function podAnnotationsOf(doc: Json): Json {
  const meta = doc['kind'] === 'Pod' ? doc['metadata'] : obj(obj(obj(doc['spec'], 'spec')['template'], 'template')['metadata'], 'template.metadata');
  return obj(obj(meta, 'metadata')['annotations'], 'annotations');
}

function splicegate(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function seconds(duration: string): number {
  const m = /^(\d+)s$/.exec(duration);
  if (m === null) throw new Error(`unexpected duration ${duration}`);
  return Number(m[1]);
}

test('examples/kubernetes holds the gateway DaemonSet and the sidecar pod', () => {
  const kinds = manifests().flatMap((m) => m.docs.map((d) => d['kind']));
  assert.ok(kinds.includes('DaemonSet') && kinds.includes('Pod'), kinds.join(', '));
});

test('the schema check can fail: a string containerPort and a probe without a port are rejected', () => {
  const bad = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, spec: { containers: [{ name: 'c', image: 'i', ports: [{ containerPort: '9901' }] }] } };
  assert.throws(() => validateObject(bad), /containerPort must be integer/);
  const noPort = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' }, spec: { containers: [{ name: 'c', image: 'i', readinessProbe: { httpGet: { path: '/ready' } } }] } };
  assert.throws(() => validateObject(noPort), /must have required property port/);
});

for (const { file, docs } of manifests()) {
  test(`examples/kubernetes/${file}: every object passes the Kubernetes schema`, () => {
    for (const doc of docs) validateObject(doc);
  });

  test(`examples/kubernetes/${file}: the ConfigMap's config passes splicegate validate, the init container's flags are accepted`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'sg-manifest-'));
    try {
      const configMaps = docs.filter((d) => d['kind'] === 'ConfigMap');
      assert.equal(configMaps.length, 1);
      const text = obj(configMaps[0]?.['data'], 'data')['splicegate.yaml'];
      assert.equal(typeof text, 'string');
      const configPath = join(dir, 'splicegate.yaml');
      writeFileSync(configPath, String(text));
      const v = splicegate(['validate', '--config', configPath]);
      assert.equal(v.status, 0, v.stderr);

      const workload = docs.find((d) => d['kind'] !== 'ConfigMap');
      if (workload === undefined) throw new Error('no workload');
      const spec = podSpecOf(workload);
      const init = list(spec['initContainers']).find((c) => list(c['args']).join(' ').startsWith('iptables install'));
      if (init === undefined) throw new Error('no init container running splicegate iptables install');
      const args = list(init['args']).map(String).map((a) => (a === '/etc/splicegate/splicegate.yaml' ? configPath : a));
      const p = splicegate(['iptables', 'print', ...args.slice(2)]);
      assert.equal(p.status, 0, `${args.join(' ')}: ${p.stderr}`);
      assert.match(p.stdout, /-j REDIRECT --to-ports 15001/);
      const caps = list(obj(obj(init['securityContext'], 'init securityContext')['capabilities'], 'capabilities')['add']);
      assert.ok(caps.includes('NET_ADMIN' as unknown as Json), 'the init container needs NET_ADMIN');

      // Operations: readiness on /ready, a preStop drain, Prometheus annotations, time to drain.
      const proxy = list(spec['containers']).find((c) => list(c['args'])[0] === ('run' as unknown));
      if (proxy === undefined) throw new Error('no splicegate run container');
      const probe = obj(obj(proxy['readinessProbe'], 'readinessProbe')['httpGet'], 'httpGet');
      assert.equal(probe['path'], '/ready');
      const adminPort = Number(/:(\d+)"?$/m.exec(/address: "(.*)"/.exec(String(text))?.[1] ?? '')?.[1]);
      assert.equal(probe['port'], adminPort, 'the probe targets the admin port');
      const preStop = JSON.stringify(obj(obj(proxy['lifecycle'], 'lifecycle')['preStop'], 'preStop'));
      assert.match(preStop, /kill -TERM 1/);
      const ann = podAnnotationsOf(workload);
      assert.equal(ann['prometheus.io/scrape'], 'true');
      assert.equal(ann['prometheus.io/port'], String(adminPort));
      assert.equal(ann['prometheus.io/path'], '/stats/prometheus');
      const drain = /^drain_timeout: (\S+)$/m.exec(String(text))?.[1];
      assert.ok(drain !== undefined, 'the config sets drain_timeout');
      assert.ok(Number(spec['terminationGracePeriodSeconds']) > seconds(drain), 'terminationGracePeriodSeconds above drain_timeout');

      if (workload['kind'] === 'DaemonSet') {
        assert.equal(spec['hostNetwork'], true);
        assert.match(args.join(' '), /--topology gateway/);
      } else {
        // The sidecar's loop exclusion is the uid splicegate runs as.
        const uid = args[args.indexOf('--exclude-uid') + 1];
        assert.match(args.join(' '), /--topology sidecar/);
        assert.equal(String(obj(proxy['securityContext'], 'securityContext')['runAsUser']), uid);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

/** A Kubernetes memory quantity ("512Mi", "1Gi", "300M") in MiB. */
function mebibytes(q: string): number {
  const m = /^(\d+)(Mi|Gi|M|G)$/.exec(q);
  if (m === null) throw new Error(`unexpected memory quantity ${q}`);
  const n = Number(m[1]);
  return m[2] === 'Gi' ? n * 1024 : m[2] === 'Mi' ? n : m[2] === 'G' ? (n * 1e9) / 2 ** 20 : (n * 1e6) / 2 ** 20;
}

// Measured (review, Node 20): 90 MB RSS with one idle worker, +12 MB per further worker; under load
// each worker may add its copy buffers (at most 64 MiB, docs/ARCHITECTURE.md). `workers: auto`
// counts the node's CPUs (os.availableParallelism: affinity only, no cgroup quota in Node 20's libuv), so with a
// memory limit the count must be fixed, or a big node OOM-kills the pod at start (64 CPUs: ~850 MB idle).
const BASE_MIB = 96;
const PER_WORKER_MIB = 12 + 64;

for (const { file, docs } of manifests()) {
  test(`examples/kubernetes/${file}: a memory limit comes with a fixed workers count that fits in it`, () => {
    const configMap = docs.find((d) => d['kind'] === 'ConfigMap');
    const config = parseAllDocuments(String(obj(configMap?.['data'], 'data')['splicegate.yaml']))[0]?.toJSON() as Json;
    const workload = docs.find((d) => d['kind'] !== 'ConfigMap');
    if (workload === undefined) throw new Error('no workload');
    const proxy = list(podSpecOf(workload)['containers']).find((c) => list(c['args']).map(String)[0] === 'run');
    if (proxy === undefined) throw new Error('no container running splicegate run');
    const limit = (proxy['resources'] as Json | undefined)?.['limits'] as Json | undefined;
    if (limit?.['memory'] === undefined) return;
    const workers = config['workers'];
    assert.equal(typeof workers, 'number', `${file}: workers is ${JSON.stringify(workers)} under a memory limit`);
    const need = BASE_MIB + Number(workers) * PER_WORKER_MIB;
    assert.ok(need <= mebibytes(String(limit['memory'])), `${file}: ${String(workers)} workers need about ${need} MiB, the limit is ${String(limit['memory'])}`);
  });
}

test('systemd units pass systemd-analyze verify', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sg-units-'));
  try {
    const units = readdirSync(SYSTEMD).filter((f) => f.endsWith('.service') || f.endsWith('.socket'));
    for (const u of ['splicegate.service', 'splicegate-iptables.service', 'splicegate.socket']) assert.ok(units.includes(u), units.join(', '));
    for (const unit of units) {
      // Point the units at this checkout and this node, so verify can check the executables.
      const text = readFileSync(join(SYSTEMD, unit), 'utf8').replaceAll('/usr/bin/node', process.execPath).replaceAll('/opt/splicegate', ROOT);
      writeFileSync(join(dir, unit), text);
    }
    const r = spawnSync('systemd-analyze', ['verify', ...units.map((u) => join(dir, u))], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.error, undefined, 'systemd-analyze is needed for this test (Debian package systemd)');
    assert.equal(r.status, 0, r.stderr);
    // Unknown keys and bad values are only warnings to verify: none may appear.
    assert.equal(r.stderr.split('\n').filter((l) => l.includes(dir)).join('\n'), '');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('splicegate.service: drains on SIGTERM within TimeoutStopSec, reloads with validate then SIGHUP, its commands work', () => {
  const unit = readFileSync(join(SYSTEMD, 'splicegate.service'), 'utf8');
  const key = (k: string): string[] => [...unit.matchAll(new RegExp(`^${k}=(.*)$`, 'gm'))].map((m) => m[1] ?? '');
  assert.deepEqual(key('Type'), ['exec']);
  assert.deepEqual(key('KillSignal'), ['SIGTERM']);
  assert.deepEqual(key('ExecReload'), [
    '/usr/bin/node /opt/splicegate/dist/src/cli.js validate --config /etc/splicegate/splicegate.yaml',
    '/bin/kill -HUP $MAINPID',
  ]);
  assert.deepEqual(key('AmbientCapabilities'), ['CAP_NET_ADMIN']);
  assert.ok(Number(key('LimitNOFILE')[0]) >= 65536);
  const gateway = readFileSync(join(ROOT, 'examples', 'gateway.yaml'), 'utf8');
  const drain = seconds(/^drain_timeout: (\S+)$/m.exec(gateway)?.[1] ?? '');
  assert.ok(seconds(key('TimeoutStopSec')[0] ?? '') > drain, 'TimeoutStopSec above the example drain_timeout');
  // The iptables unit's command line, as print, against the example config.
  const iptables = readFileSync(join(SYSTEMD, 'splicegate-iptables.service'), 'utf8');
  const start = /^ExecStart=\S+ \S+ (iptables install .*)$/m.exec(iptables)?.[1];
  assert.ok(start !== undefined);
  const args = start.split(' ').map((a) => (a === '/etc/splicegate/splicegate.yaml' ? join(ROOT, 'examples', 'gateway.yaml') : a));
  const r = splicegate(['iptables', 'print', ...args.slice(2)]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^ip6tables .*-p tcp -i eth1 -m multiport --dports 80,443 -j REDIRECT --to-ports 15001$/m);
});

test('splicegate.socket: one IPv6-only ListenStream per listener of the example config, at its address', () => {
  const unit = readFileSync(join(SYSTEMD, 'splicegate.socket'), 'utf8');
  const key = (k: string): string[] => [...unit.matchAll(new RegExp(`^${k}=(.*)$`, 'gm'))].map((m) => m[1] ?? '');
  const config = parseAllDocuments(readFileSync(join(ROOT, 'examples', 'gateway.yaml'), 'utf8'))[0]?.toJSON() as { listeners: Array<{ address: string }> };
  // splicegate matches an unnamed passed socket by its exact address (src/proxy/socket-activation.ts).
  assert.deepEqual(key('ListenStream'), config.listeners.map((l) => l.address));
  assert.deepEqual(key('BindIPv6Only'), ['ipv6-only']);
  assert.deepEqual(key('FileDescriptorName'), [], 'one name for every socket of the unit would not tell the listeners apart');
});

test('Dockerfile: Debian bookworm base, npm ci, the install build steps, iptables in the image', () => {
  const text = readFileSync(join(ROOT, 'examples', 'Dockerfile'), 'utf8');
  const froms = [...text.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]);
  assert.ok(froms.length >= 1 && froms.every((f) => f?.includes('bookworm')), froms.join(', '));
  assert.match(text, /^RUN npm ci\b/m);
  assert.match(text, /cmake-js compile --release/);
  // CMakeLists.txt builds llhttp from the C sources Debian's node-llhttp ships (a FATAL_ERROR
  // without them): the build stage, which compiles the addon, must install that package.
  const cmake = readFileSync(join(ROOT, 'CMakeLists.txt'), 'utf8');
  assert.match(cmake, /"\/usr\/share\/llhttp"/);
  const buildStage = text.slice(0, text.indexOf('FROM', text.indexOf('FROM') + 1));
  assert.match(buildStage, /apt-get install [^\n]*\bnode-llhttp\b/, 'the build stage does not install node-llhttp (llhttp sources)');
  assert.match(text, /apt-get install .*iptables/);
  assert.match(text, /^ENTRYPOINT \["node", "\/opt\/splicegate\/dist\/src\/cli\.js"\]$/m);
});
