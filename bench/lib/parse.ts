// Parsers for the load generators' output: wrk (through bench/lib/wrk-report.lua) and iperf3 -J.

export interface WrkErrors {
  connect: number;
  read: number;
  write: number;
  /** Responses with a status other than 2xx/3xx. */
  status: number;
  timeout: number;
}

export interface WrkResult {
  requests: number;
  bytes: number;
  durationS: number;
  requestsPerSec: number;
  /** Payload rate (response bytes read by the client), Gbit/s. */
  gbitPerSec: number;
  errors: WrkErrors;
  latencyUs: { min: number; mean: number; p50: number; p90: number; p99: number; p999: number; max: number };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function numAt(o: Record<string, unknown>, key: string, what: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${what}: field "${key}" is not a number`);
  return v;
}

function recAt(o: Record<string, unknown>, key: string, what: string): Record<string, unknown> {
  const v = o[key];
  if (!isRecord(v)) throw new Error(`${what}: field "${key}" is not an object`);
  return v;
}

/** Parse wrk's stdout: the WRKJSON line printed by wrk-report.lua. */
export function parseWrk(stdout: string): WrkResult {
  const line = stdout.split('\n').find((l) => l.startsWith('WRKJSON '));
  if (!line) throw new Error(`wrk printed no WRKJSON summary line:\n${stdout.slice(-2000)}`);
  let o: unknown;
  try {
    o = JSON.parse(line.slice('WRKJSON '.length));
  } catch (e) {
    throw new Error(`wrk summary is not JSON (${String(e)}): ${line}`);
  }
  if (!isRecord(o)) throw new Error(`wrk summary is not an object: ${line}`);
  const what = 'wrk summary';
  const requests = numAt(o, 'requests', what);
  const bytes = numAt(o, 'bytes', what);
  const durationS = numAt(o, 'duration_us', what) / 1e6;
  const e = recAt(o, 'errors', what);
  const l = recAt(o, 'latency_us', what);
  return {
    requests,
    bytes,
    durationS,
    requestsPerSec: durationS > 0 ? requests / durationS : 0,
    gbitPerSec: durationS > 0 ? (bytes * 8) / durationS / 1e9 : 0,
    errors: {
      connect: numAt(e, 'connect', what),
      read: numAt(e, 'read', what),
      write: numAt(e, 'write', what),
      status: numAt(e, 'status', what),
      timeout: numAt(e, 'timeout', what),
    },
    latencyUs: {
      min: numAt(l, 'min', what),
      mean: numAt(l, 'mean', what),
      p50: numAt(l, 'p50', what),
      p90: numAt(l, 'p90', what),
      p99: numAt(l, 'p99', what),
      p999: numAt(l, 'p999', what),
      max: numAt(l, 'max', what),
    },
  };
}

export function wrkErrorCount(r: WrkResult): number {
  const e = r.errors;
  return e.connect + e.read + e.write + e.status + e.timeout;
}

export interface IperfResult {
  /** Bytes the receiver got, over the whole test. */
  bytes: number;
  seconds: number;
  gbitPerSec: number;
  /** Sender TCP retransmits (null when iperf3 could not read them). */
  retransmits: number | null;
  /** CPU-seconds of the iperf3 client + server processes, from their own cpu_utilization_percent. */
  endpointCpuS: number;
}

/** Parse `iperf3 -J` output; throws on iperf3's own "error" field. */
export function parseIperf(stdout: string): IperfResult {
  let o: unknown;
  try {
    o = JSON.parse(stdout);
  } catch (e) {
    throw new Error(`iperf3 output is not JSON (${String(e)}):\n${stdout.slice(-2000)}`);
  }
  if (!isRecord(o)) throw new Error('iperf3 output is not a JSON object');
  if (typeof o['error'] === 'string') throw new Error(`iperf3: ${o['error']}`);
  const end = recAt(o, 'end', 'iperf3');
  const recv = recAt(end, 'sum_received', 'iperf3 end');
  const sent = recAt(end, 'sum_sent', 'iperf3 end');
  const bytes = numAt(recv, 'bytes', 'iperf3 sum_received');
  const seconds = numAt(recv, 'seconds', 'iperf3 sum_received');
  const rt = sent['retransmits'];
  const util = end['cpu_utilization_percent'];
  let endpointCpuS = 0;
  if (isRecord(util)) {
    const host = util['host_total'];
    const remote = util['remote_total'];
    endpointCpuS = (((typeof host === 'number' ? host : 0) + (typeof remote === 'number' ? remote : 0)) / 100) * seconds;
  }
  return {
    bytes,
    seconds,
    endpointCpuS,
    gbitPerSec: numAt(recv, 'bits_per_second', 'iperf3 sum_received') / 1e9,
    retransmits: typeof rt === 'number' ? rt : null,
  };
}
