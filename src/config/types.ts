// The validated, typed configuration. The YAML names (snake_case) are a contract other tools rely
// on; this is their in-memory form after validation: durations in milliseconds, addresses split.

/** original_dst: relay each connection to its original destination; http: route each HTTP request (docs/HTTP.md). */
export type ListenerMode = 'original_dst' | 'http';

/** tcp: connections (every mode); udp: datagrams under TPROXY, per (client, original destination) sessions. */
export type ListenerProtocol = 'tcp' | 'udp';

export interface SocketAddress {
  /** Literal IP as written, without brackets ("0.0.0.0", "::", "10.0.0.1"). */
  host: string;
  port: number;
  family: 4 | 6;
  /** Canonical text form: "10.0.0.1:80" or "[::1]:80". */
  text: string;
}

export interface ListenerConfig {
  name: string;
  address: SocketAddress;
  mode: ListenerMode;
  /** udp needs transparent and mode original_dst. */
  protocol: ListenerProtocol;
  /** IP_TRANSPARENT listener for TPROXY: the original destination is the accepted socket's local address. */
  transparent: boolean;
  backlog: number;
  /** The listener's own `policy:`, which replaces the top-level one; null = the top-level policy applies. */
  policy: PolicyConfig | null;
  /** PROXY protocol (v1 or v2) header expected from trusted senders; null = off (the default). */
  proxyProtocol: ProxyProtocolConfig | null;
  /** The HTTP listener's settings; present iff mode is 'http'. */
  http?: HttpListenerConfig;
}

/** listeners[].http: how an HTTP listener picks each request's destination (docs/HTTP.md). */
export interface HttpListenerConfig {
  /** Lowercased; the header naming the destination as "ip:port" (Envoy's http_header_name). */
  headerName: string;
  /** Clients whose header is honoured; empty = nobody's (each request goes to its original destination). */
  trustedSources: Cidr[];
  /** Remove the header before forwarding the request upstream. */
  stripHeader: boolean;
  /** Accept CONNECT ip:port tunnels. */
  connect: boolean;
  /** A request head must be complete this long after its first byte (or after accept); else 408. */
  requestHeadTimeoutMs: number;
  /** Request line plus headers larger than this: 431. */
  maxRequestHeadBytes: number;
}

export interface ProxyProtocolConfig {
  /** Only connections from these source ranges may carry a header. */
  trustedSources: Cidr[];
  /** true: every connection must start with a valid header from a trusted source; false: one
   *  whose first bytes are not a PROXY signature is relayed as if the listener had no header. */
  required: boolean;
  /** The whole header must have arrived this long after accept. */
  timeoutMs: number;
}

/** Header written at the start of each upstream connection; 'off' writes none. */
export type SendProxyProtocol = 'off' | 'v1' | 'v2';

export interface ClusterConfig {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  cleanupIntervalMs: number;
  /** SO_MARK for upstream sockets; 0 leaves the mark unset. */
  upstreamMark: number;
  /** Bound on cached original-destination hosts (split across workers). */
  maxHosts: number;
  /** Envoy circuit breakers per host: open connections and connects in flight (split across workers); 0 = no per-host bound. */
  maxConnectionsPerHost: number;
  maxPendingPerHost: number;
  /** Global bound on relayed connections; 0 = derived from the open-files limit. */
  maxDownstreamConnections: number;
  /** Envoy's upstream_port_override: connect to the original address on this port; 0 = keep it. */
  upstreamPortOverride: number;
  /** Warm upstream sockets for used hosts on these ports; null = off (the default). */
  preconnect: PreconnectConfig | null;
  /** PROXY protocol header naming the client and original destination on each upstream connection. */
  sendProxyProtocol: SendProxyProtocol;
  /** Upstream sockets bind to the client's IP (IP_TRANSPARENT), so the destination sees the client. */
  originalSource: boolean;
  /** Idle upstream keep-alive connections kept for HTTP listeners. */
  httpPool: HttpPoolConfig;
  /** A UDP session ends after this long without a datagram either way. */
  udpSessionTimeoutMs: number;
  /** UDP sessions per worker; a new flow evicts the session idle longest. */
  udpMaxSessionsPerWorker: number;
}

export interface HttpPoolConfig {
  /** Idle connections kept per original host (split across workers); 0 = none kept. */
  maxIdlePerHost: number;
  /** An idle pooled connection is closed after this long. */
  idleTimeoutMs: number;
}

export interface PreconnectConfig {
  ports: number[];
  perHost: number;
  ttlMs: number;
}

export interface TuningConfig {
  /** auto: copy small reads through a buffer, splice(2) bulk ones; splice: always; copy: never. */
  relayMode: 'auto' | 'splice' | 'copy';
  /** F_SETPIPE_SZ for relay pipes in bytes; 0 keeps the kernel default (64 KiB). */
  pipeSize: number;
  /** Copy-path buffer; a read that fills it switches that direction to splice. */
  copyBufferSize: number;
  /** thread: each worker's loop on its own native thread (default); uv: on the JS worker thread's libuv loop. */
  driver: 'thread' | 'uv';
  /** Latency histograms on (default) or off; off exists for the recording-cost A/B. */
  recordLatency: boolean;
}

export interface AdminConfig {
  address: SocketAddress;
  /** Host names answered besides IP literals (lower case, no trailing dot); "*" = any. */
  allowedHosts: string[];
}

/** One JSON line per connection (docs/CONFIG.md "access_log"). */
export interface AccessLogConfig {
  /** Absolute file path (appended to, created if missing), or "stdout". */
  path: string;
  format: 'json';
  /** Fraction of connections logged, 0..1, decided in each worker's core as a connection closes. */
  sample: number;
}

export type PolicyAction = 'allow' | 'deny';

/** A network from a policy rule; host bits are never set (docs/POLICY.md). */
export interface Cidr {
  family: 4 | 6;
  /** The network address, canonical ("10.0.5.0", "2001:db8::"). */
  network: string;
  prefix: number;
  /** Canonical "network/prefix". */
  text: string;
}

/** Destination ports first..last, both included, 1..65535. */
export interface PortRange {
  first: number;
  last: number;
}

export interface PolicyRuleConfig {
  /** Unique in its policy; the counter is policy.<name>.denied. */
  name: string;
  action: PolicyAction;
  cidrs: Cidr[];
  /** Empty = every port. */
  ports: PortRange[];
}

/** Destination policy: built-in special denies, then the rules in order (first match wins), then the default. */
export interface PolicyConfig {
  defaultAction: PolicyAction;
  rules: PolicyRuleConfig[];
  /** Deny loopback, unspecified, link-local/metadata, multicast and this host's own addresses before the rules. */
  denySpecial: boolean;
}

export interface SplicegateConfig {
  /** Resolved worker count (the YAML may say "auto": CPU count). */
  workers: number;
  admin: AdminConfig;
  listeners: ListenerConfig[];
  /** The top-level `policy:`; applies to every listener without its own. */
  policy: PolicyConfig;
  cluster: ClusterConfig;
  drainTimeoutMs: number;
  tuning: TuningConfig;
  /** null = no access log (the default). */
  accessLog: AccessLogConfig | null;
}
