// Envoy v3 bootstrap (static_resources) -> splicegate config, in the file's own snake_case form so
// it can be printed (`convert --envoy`) and then validated by the one schema (src/config/schema.ts).
// What maps is in docs/ENVOY.md; everything else becomes a Finding at its path in the Envoy file.

import { Findings, type Segment } from './findings';
import { isV2TypeUrl, NAME_ONLY, TYPE } from './type-urls';
import { describe, envoyBool, envoyDurationMs, envoySocketAddress, envoyUint, isRecord, splicegateDuration } from './values';
import { DEFAULTS, LISTENER_NAME_RE, MAX_REQUEST_HEAD_BYTES, MIN_REQUEST_HEAD_BYTES } from '../config/schema';

export const DEFAULT_ENVOY_HEADER = 'x-envoy-original-dst-host';
/** Envoy honours the header from every client; so does the converted listener (with a warning). */
export const TRUST_EVERYONE = ['0.0.0.0/0', '::/0'];
const SOL_SOCKET = 1;
const SO_MARK = 36;

export interface Conversion {
  /** splicegate config in file form; undefined when nothing runnable is left. */
  config: Record<string, unknown> | undefined;
  findings: Findings;
}

type Obj = Record<string, unknown>;

interface OriginalDstCluster {
  name: string;
  path: Segment[];
  useHttpHeader: boolean;
  headerName: string;
}

/** Cluster-level splicegate settings, and where in the Envoy file each came from (for conflicts). */
class ClusterOut {
  readonly values: Obj = {};
  private readonly from = new Map<string, string>();

  constructor(private readonly findings: Findings) {}

  set(key: string, value: unknown, path: Segment[]): void {
    const had = this.values[key];
    if (had !== undefined && JSON.stringify(had) !== JSON.stringify(value)) {
      this.findings.error(path, `conflicts with ${this.from.get(key) ?? 'another setting'} (${describe(had)}): splicegate has one cluster, so cluster.${key} takes one value`);
      return;
    }
    this.values[key] = value;
    this.from.set(key, path.map((s) => (typeof s === 'number' ? `[${s}]` : `.${s}`)).join('').replace(/^\./, ''));
  }
}

// Keys dropped with a warning: they change neither where traffic goes nor who may send it.
const HARMLESS_BOOTSTRAP = new Set(['node', 'node_context_params', 'layered_runtime', 'runtime', 'stats_sinks', 'stats_config', 'stats_flush_interval', 'stats_flush_on_admin', 'watchdog', 'watchdogs', 'tracing', 'overload_manager', 'cluster_manager', 'flags_path', 'hds_config', 'enable_dispatcher_stats', 'header_prefix', 'stats_server_version_override', 'use_time_system', 'fatal_actions', 'default_regex_engine', 'application_log_config', 'bootstrap_extensions']);
const HARMLESS_ADMIN = new Set(['access_log_path', 'access_log', 'profile_path', 'socket_options', 'ignore_global_conn_limit']);
const HARMLESS_LISTENER = new Set(['stat_prefix', 'per_connection_buffer_limit_bytes', 'listener_filters_timeout', 'continue_on_listener_filters_timeout', 'traffic_direction', 'socket_options', 'freebind', 'enable_reuse_port', 'reuse_port', 'access_log', 'connection_balance_config', 'drain_type', 'metadata', 'ignore_global_conn_limit', 'enable_mptcp', 'tcp_fast_open_queue_length', 'max_connections_to_accept_per_socket_event']);
const HARMLESS_FILTER_CHAIN = new Set(['transport_socket_connect_timeout', 'metadata']);
const HARMLESS_CLUSTER = new Set(['dns_lookup_family', 'dns_refresh_rate', 'dns_failure_refresh_rate', 'respect_dns_ttl', 'dns_resolvers', 'use_tcp_for_dns_lookups', 'dns_resolution_config', 'typed_dns_resolver_config', 'per_connection_buffer_limit_bytes', 'common_lb_config', 'health_checks', 'outlier_detection', 'upstream_connection_options', 'close_connections_on_host_health_failure', 'ignore_health_on_host_removal', 'track_cluster_stats', 'track_timeout_budgets', 'alt_stat_name', 'metadata', 'common_http_protocol_options', 'http_protocol_options', 'connection_pool_per_downstream_connection', 'wait_for_warm_on_init', 'protocol_selection']);
const HARMLESS_TCP_PROXY = new Set(['stat_prefix', 'access_log', 'access_log_options', 'max_connect_attempts', 'max_downstream_connection_duration', 'downstream_idle_timeout', 'upstream_idle_timeout', 'flush_access_log_on_connected', 'backoff_options']);
const HARMLESS_HCM = new Set(['stat_prefix', 'access_log', 'access_log_options', 'use_remote_address', 'xff_num_trusted_hops', 'skip_xff_append', 'via', 'generate_request_id', 'preserve_external_request_id', 'always_set_request_id_in_response', 'server_name', 'server_header_transformation', 'common_http_protocol_options', 'http_protocol_options', 'stream_idle_timeout', 'request_timeout', 'drain_timeout', 'delayed_close_timeout', 'normalize_path', 'merge_slashes', 'path_with_escaped_slashes_action', 'tracing', 'strip_matching_host_port', 'strip_any_host_port', 'internal_address_config', 'add_user_agent', 'represent_ipv4_remote_address_as_ipv4_mapped_ipv6', 'forward_client_cert_details', 'set_current_client_cert_details', 'proxy_100_continue', 'stream_error_on_invalid_http_message', 'max_request_headers_count']);
const HARMLESS_ROUTE_ACTION = new Set(['timeout', 'idle_timeout', 'retry_policy', 'max_stream_duration', 'max_grpc_timeout', 'upgrade_configs']);
const HARMLESS_VHOST = new Set(['cors', 'retry_policy', 'include_request_attempt_count', 'include_attempt_count_in_response']);

/** Convert a parsed Envoy bootstrap; `lenient` turns routing/security errors into warnings. */
export function convertEnvoyBootstrap(root: unknown, lenient: boolean): Conversion {
  const findings = new Findings(lenient);
  const none = (): Conversion => ({ config: undefined, findings });
  if (!isRecord(root)) {
    findings.fatal([], `not an Envoy bootstrap: expected a mapping with static_resources, got ${describe(root)}`);
    return none();
  }
  if (root['static_resources'] === undefined) {
    if (root['listeners'] !== undefined) {
      findings.fatal([], 'not an Envoy bootstrap: this looks like a splicegate config (top-level "listeners"); pass it with --config');
    } else if (root['staticResources'] !== undefined) {
      findings.fatal(['staticResources'], 'protobuf JSON lowerCamelCase names are not read: write the proto field names (static_resources, socket_address, port_value, ...)');
    } else if (root['dynamic_resources'] !== undefined) {
      findings.fatal(['dynamic_resources'], 'not supported: splicegate reads static_resources only (no xDS)');
    } else {
      findings.fatal([], 'not an Envoy v3 bootstrap: it has no static_resources');
    }
    return none();
  }

  camelCaseKeys(root, [], findings);
  const cluster = new ClusterOut(findings);
  const out: Obj = {};
  for (const [key, value] of Object.entries(root)) {
    if (key === 'static_resources') continue;
    if (key === 'admin') out['admin'] = mapAdmin(value, findings);
    else if (key === 'dynamic_resources') findings.error([key], 'not supported: splicegate reads static_resources only (no xDS)');
    else if (HARMLESS_BOOTSTRAP.has(key)) findings.warn([key], 'ignored');
    else findings.warn([key], 'ignored (not an Envoy bootstrap key splicegate knows)');
  }
  if (out['admin'] === undefined) {
    delete out['admin'];
    // Envoy without admin opens no admin port; splicegate always has one: say where.
    if (root['admin'] === undefined) findings.warn(['admin'], `absent: splicegate's admin endpoint listens on its default, ${DEFAULTS.adminAddress}`);
  }

  const sr = root['static_resources'];
  const srPath: Segment[] = ['static_resources'];
  if (!isRecord(sr)) {
    findings.fatal(srPath, `expected a mapping, got ${describe(sr)}`);
    return none();
  }
  for (const key of Object.keys(sr)) {
    if (key !== 'listeners' && key !== 'clusters') findings.warn([...srPath, key], 'ignored');
  }
  const clusters = mapClusters(sr['clusters'], [...srPath, 'clusters'], cluster, findings);
  const listeners = mapListeners(sr['listeners'], [...srPath, 'listeners'], clusters, cluster, findings);
  if (listeners.length === 0) {
    findings.fatal([...srPath, 'listeners'], 'no listener could be converted (see the problems above)');
    return none();
  }
  out['listeners'] = listeners;
  if (Object.keys(cluster.values).length > 0) out['cluster'] = cluster.values;
  return { config: out, findings };
}

/** Maps whose keys are names the user chose, not Envoy fields. */
const FREE_FORM_KEYS = new Set(['metadata', 'typed_per_filter_config', 'per_filter_config']);

// Envoy also reads protobuf JSON's lowerCamelCase field names (portValue, maxConnections). The
// converter matches proto field names, so such a key would be unknown to it: an error in most
// places, but only an "ignored" warning in a few where Envoy applies it (circuit-breaker
// thresholds). Every one is reported as an error, with the name to write instead.
function camelCaseKeys(node: unknown, path: Segment[], findings: Findings): void {
  if (Array.isArray(node)) {
    node.forEach((v: unknown, i) => camelCaseKeys(v, [...path, i], findings));
    return;
  }
  if (!isRecord(node)) return;
  for (const [key, v] of Object.entries(node)) {
    if (FREE_FORM_KEYS.has(key)) continue;
    if (/^[a-z][a-z0-9]*[A-Z]/.test(key)) {
      const snake = key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      findings.error([...path, key], `a lowerCamelCase name (protobuf JSON): the converter reads the proto field names; write ${snake}`);
    } else {
      camelCaseKeys(v, [...path, key], findings);
    }
  }
}

function mapAdmin(value: unknown, findings: Findings): Obj | undefined {
  const path: Segment[] = ['admin'];
  if (!isRecord(value)) {
    findings.warn(path, `ignored: expected a mapping, got ${describe(value)}`);
    return undefined;
  }
  let result: Obj | undefined;
  for (const [key, v] of Object.entries(value)) {
    if (key === 'address') {
      const addr = envoySocketAddress(v);
      if (typeof addr === 'string') findings.error([...path, key], addr);
      else result = { address: addr.text };
    } else if (HARMLESS_ADMIN.has(key)) {
      findings.warn([...path, key], 'ignored');
    } else {
      findings.warn([...path, key], 'ignored (unknown admin key)');
    }
  }
  return result;
}

function mapClusters(value: unknown, path: Segment[], out: ClusterOut, findings: Findings): Map<string, OriginalDstCluster> {
  const result = new Map<string, OriginalDstCluster>();
  if (value === undefined) return result;
  if (!Array.isArray(value)) {
    findings.error(path, `expected a list of clusters, got ${describe(value)}`);
    return result;
  }
  const seen = new Map<string, number>();
  value.forEach((c: unknown, i) => {
    const cp = [...path, i];
    if (!isRecord(c)) {
      findings.error(cp, `expected a cluster mapping, got ${describe(c)}`);
      return;
    }
    const name = typeof c['name'] === 'string' ? c['name'] : undefined;
    if (name === undefined) {
      findings.error([...cp, 'name'], 'a cluster needs a name');
      return;
    }
    // Envoy refuses a second cluster of the same name; taking either would be a guess.
    const first = seen.get(name);
    if (first !== undefined) {
      findings.error([...cp, 'name'], `duplicate cluster name ${JSON.stringify(name)} (also static_resources.clusters[${first}])`);
      result.delete(name);
      return;
    }
    seen.set(name, i);
    if (c['type'] !== 'ORIGINAL_DST') {
      const type = c['cluster_type'] !== undefined ? 'a custom cluster_type' : `type ${c['type'] === undefined ? 'STATIC (the default)' : describe(c['type'])}`;
      findings.error([...cp, c['cluster_type'] !== undefined ? 'cluster_type' : 'type'], `cluster ${JSON.stringify(name)} has ${type}: only ORIGINAL_DST clusters map onto splicegate; listeners routing to it are not converted`);
      return;
    }
    const entry: OriginalDstCluster = { name, path: cp, useHttpHeader: false, headerName: DEFAULT_ENVOY_HEADER };
    for (const [key, v] of Object.entries(c)) {
      const kp = [...cp, key];
      switch (key) {
        case 'name':
        case 'type':
          break;
        case 'lb_policy':
          if (v !== 'CLUSTER_PROVIDED' && v !== 'ORIGINAL_DST_LB') findings.error(kp, `expected CLUSTER_PROVIDED for an ORIGINAL_DST cluster, got ${describe(v)}`);
          break;
        case 'connect_timeout':
        case 'cleanup_interval': {
          const ms = envoyDurationMs(v);
          if (typeof ms === 'string') findings.error(kp, ms);
          else if (ms === 0) findings.error(kp, 'a zero duration cannot be mapped (splicegate durations are positive)');
          else out.set(key, splicegateDuration(ms), kp);
          break;
        }
        case 'original_dst_lb_config':
          mapLbConfig(v, kp, entry, out, findings);
          break;
        case 'circuit_breakers':
          mapCircuitBreakers(v, kp, out, findings);
          break;
        case 'upstream_bind_config':
          mapBindConfig(v, kp, out, findings);
          break;
        default:
          if (HARMLESS_CLUSTER.has(key)) findings.warn(kp, 'ignored');
          else findings.error(kp, 'not supported (transport sockets, protocol options and other cluster settings may change what is sent upstream)');
      }
    }
    result.set(name, entry);
  });
  return result;
}

function mapLbConfig(value: unknown, path: Segment[], entry: OriginalDstCluster, out: ClusterOut, findings: Findings): void {
  if (!isRecord(value)) {
    findings.error(path, `expected a mapping, got ${describe(value)}`);
    return;
  }
  for (const [key, v] of Object.entries(value)) {
    const kp = [...path, key];
    if (key === 'use_http_header') {
      if (typeof v === 'boolean') entry.useHttpHeader = v;
      else findings.error(kp, `expected true or false, got ${describe(v)}`);
    } else if (key === 'http_header_name') {
      if (typeof v === 'string') entry.headerName = v === '' ? DEFAULT_ENVOY_HEADER : v;
      else findings.error(kp, `expected a header name, got ${describe(v)}`);
    } else if (key === 'upstream_port_override') {
      const port = envoyUint(v);
      if (typeof port === 'string' || port < 1 || port > 65535) findings.error(kp, `expected a port from 1 to 65535, got ${describe(v)}`);
      else out.set('upstream_port_override', port, kp);
    } else {
      findings.error(kp, 'not supported (it changes how the destination is chosen)');
    }
  }
}

// Envoy's cluster-wide thresholds vs splicegate's per-host limits: max_connections over the whole
// cluster is a bound on the total, which is max_downstream_connections (one upstream per relayed
// connection); per_host_thresholds.max_connections is exactly cluster.max_connections.
function mapCircuitBreakers(value: unknown, path: Segment[], out: ClusterOut, findings: Findings): void {
  if (!isRecord(value)) {
    findings.error(path, `expected a mapping, got ${describe(value)}`);
    return;
  }
  for (const [key, list] of Object.entries(value)) {
    const lp = [...path, key];
    if (key !== 'thresholds' && key !== 'per_host_thresholds') {
      findings.warn(lp, 'ignored');
      continue;
    }
    if (!Array.isArray(list)) {
      findings.error(lp, `expected a list, got ${describe(list)}`);
      continue;
    }
    list.forEach((t: unknown, i) => {
      const tp = [...lp, i];
      if (!isRecord(t)) {
        findings.error(tp, `expected a mapping, got ${describe(t)}`);
        return;
      }
      if (t['priority'] !== undefined && t['priority'] !== 'DEFAULT') {
        findings.warn(tp, `ignored: priority ${describe(t['priority'])} (splicegate has no route priorities; only DEFAULT thresholds map)`);
        return;
      }
      for (const [field, v] of Object.entries(t)) {
        const fp = [...tp, field];
        if (field === 'priority') continue;
        const n = envoyUint(v);
        const target =
          key === 'per_host_thresholds'
            ? field === 'max_connections' ? 'max_connections' : undefined
            : field === 'max_connections' ? 'max_downstream_connections' : field === 'max_pending_requests' ? 'max_pending' : undefined;
        if (target === undefined) {
          findings.warn(fp, 'ignored');
        } else if (typeof n === 'string' || n > 10_000_000) {
          findings.error(fp, typeof n === 'string' ? n : `must be at most 10000000, got ${n}`);
        } else if (n === 0) {
          // Envoy's 0 opens the circuit for every connection; splicegate's 0 means "no bound".
          findings.error(fp, `0 cannot be mapped: in Envoy it lets no connection through, while splicegate's cluster.${target}: 0 means no bound`);
        } else {
          out.set(target, n, fp);
          if (target === 'max_pending') findings.warn(fp, 'mapped to cluster.max_pending, which splicegate counts per original host (Envoy counts pending requests over the whole cluster)');
        }
      }
    });
  }
}

// upstream_bind_config: a fixed source address cannot be mapped (splicegate binds either nothing or
// the client's address); SO_MARK among its socket options is cluster.upstream_mark.
function mapBindConfig(value: unknown, path: Segment[], out: ClusterOut, findings: Findings): void {
  if (!isRecord(value)) {
    findings.error(path, `expected a mapping, got ${describe(value)}`);
    return;
  }
  for (const [key, v] of Object.entries(value)) {
    const kp = [...path, key];
    if (key === 'source_address') {
      const sa = isRecord(v) ? v : {};
      const unspecified = (sa['address'] === '0.0.0.0' || sa['address'] === '::') && (sa['port_value'] === undefined || sa['port_value'] === 0);
      if (unspecified) findings.warn(kp, 'ignored: the unspecified address binds nothing');
      else findings.error(kp, 'a fixed upstream source address is not supported (splicegate binds nothing, or the client\'s address with original_src)');
    } else if (key === 'socket_options') {
      mapSocketOptions(v, kp, out, findings);
    } else if (key === 'freebind') {
      findings.warn(kp, 'ignored');
    } else {
      findings.error(kp, 'not supported (it changes the upstream source)');
    }
  }
}

function mapSocketOptions(value: unknown, path: Segment[], out: ClusterOut, findings: Findings): void {
  if (!Array.isArray(value)) {
    findings.error(path, `expected a list, got ${describe(value)}`);
    return;
  }
  value.forEach((o: unknown, i) => {
    const op = [...path, i];
    const level = isRecord(o) ? envoyUint(o['level']) : undefined;
    const name = isRecord(o) ? envoyUint(o['name']) : undefined;
    const mark = isRecord(o) ? envoyUint(o['int_value']) : undefined;
    if (level === SOL_SOCKET && name === SO_MARK && typeof mark === 'number') out.set('upstream_mark', mark, [...op, 'int_value']);
    else findings.error(op, 'only SO_MARK (level 1, name 36, int_value) maps (onto cluster.upstream_mark); other socket options may change routing');
  });
}

function mapListeners(value: unknown, path: Segment[], clusters: Map<string, OriginalDstCluster>, out: ClusterOut, findings: Findings): Obj[] {
  if (!Array.isArray(value)) {
    findings.fatal(path, value === undefined ? 'no listeners' : `expected a list of listeners, got ${describe(value)}`);
    return [];
  }
  const result: Obj[] = [];
  const names = new Set<string>();
  value.forEach((l: unknown, i) => {
    const converted = mapListener(l, [...path, i], i, clusters, out, findings);
    if (converted === undefined) return;
    let name = String(converted['name']);
    for (let n = 2; names.has(name); n += 1) name = `${String(converted['name']).slice(0, 60)}-${n}`;
    if (name !== converted['name']) findings.warn([...path, i, 'name'], `renamed to ${name}: ${String(converted['name'])} is taken by another listener`);
    names.add(name);
    result.push({ ...converted, name });
  });
  return result;
}

interface ListenerFlags {
  originalDst: boolean;
  transparent: boolean;
}

function mapListener(l: unknown, lp: Segment[], index: number, clusters: Map<string, OriginalDstCluster>, out: ClusterOut, findings: Findings): Obj | undefined {
  if (!isRecord(l)) {
    findings.error(lp, `expected a listener mapping, got ${describe(l)}`);
    return undefined;
  }
  const rawName = l['name'];
  const listener: Obj = { name: typeof rawName === 'string' && LISTENER_NAME_RE.test(rawName) ? rawName : `listener_${index}` };
  if (typeof rawName === 'string' && listener['name'] !== rawName) findings.warn([...lp, 'name'], `renamed to ${String(listener['name'])}: splicegate names are letters, digits, "_", "." or "-"`);
  const flags: ListenerFlags = { originalDst: false, transparent: false };
  let ok = true;
  let chains: unknown;
  for (const [key, v] of Object.entries(l)) {
    const kp = [...lp, key];
    switch (key) {
      case 'name':
        break;
      case 'filter_chains':
        chains = v;
        break;
      case 'address': {
        const addr = envoySocketAddress(v);
        if (typeof addr === 'string') {
          findings.error(kp, addr);
          ok = false;
        } else {
          listener['address'] = addr.text;
        }
        break;
      }
      case 'transparent':
      case 'use_original_dst': {
        // Envoy refuses a non-boolean here; ignoring one would relay to a different destination.
        const b = envoyBool(v);
        if (b === undefined) {
          findings.error(kp, `expected true or false, got ${describe(v)}`);
          ok = false;
        } else if (key === 'transparent') {
          flags.transparent = b;
        } else {
          flags.originalDst = flags.originalDst || b;
        }
        break;
      }
      case 'tcp_backlog_size': {
        const n = envoyUint(v);
        if (typeof n === 'number' && n >= 1 && n <= 65535) listener['backlog'] = n;
        else findings.warn(kp, `ignored: ${typeof n === 'string' ? n : `splicegate's backlog is 1 to 65535, got ${n}`}`);
        break;
      }
      case 'listener_filters':
        // An unsupported listener filter is an error (the file is refused) or, lenient, skipped.
        mapListenerFilters(v, kp, flags, out, findings);
        break;
      default:
        if (HARMLESS_LISTENER.has(key)) findings.warn(kp, 'ignored');
        else findings.error(kp, 'not supported (it may change which connections this listener takes or how)');
    }
  }
  if (listener['address'] === undefined && ok) {
    findings.error([...lp, 'address'], 'required');
    ok = false;
  }
  const chain = mapFilterChains(chains, [...lp, 'filter_chains'], clusters, findings);
  if (chain === undefined || !ok) return undefined;
  if (flags.transparent) listener['transparent'] = true;
  if (chain.kind === 'tcp') {
    if (!flags.originalDst && !flags.transparent) {
      findings.error(lp, 'tcp_proxy to an ORIGINAL_DST cluster without the original_dst listener filter, use_original_dst or transparent: Envoy would connect to the listener\'s own address; not converted');
      return undefined;
    }
    listener['mode'] = 'original_dst';
    if (chain.idleTimeout !== undefined) out.set('idle_timeout', chain.idleTimeout.value, chain.idleTimeout.path);
    return listener;
  }
  listener['mode'] = 'http';
  listener['http'] = chain.http;
  return listener;
}

function mapListenerFilters(value: unknown, path: Segment[], flags: ListenerFlags, out: ClusterOut, findings: Findings): void {
  if (!Array.isArray(value)) {
    findings.error(path, `expected a list, got ${describe(value)}`);
    return;
  }
  forEachFilter(value, path, findings, (type, config, fp) => {
    if (type === TYPE.originalDstListenerFilter) {
      flags.originalDst = true;
      for (const key of Object.keys(config)) if (key !== '@type') findings.warn([...fp, 'typed_config', key], 'ignored');
    } else if (type === TYPE.originalSrcListenerFilter) {
      out.set('original_source', true, fp);
      for (const [key, v] of Object.entries(config)) {
        const kp = [...fp, 'typed_config', key];
        if (key === '@type') continue;
        const n = envoyUint(v);
        if (key === 'mark' && typeof n === 'number') {
          if (n !== 0) out.set('upstream_mark', n, kp);
        } else if (key === 'bind_port') {
          findings.warn(kp, 'ignored: splicegate binds the client\'s address with an ephemeral port');
        } else {
          findings.error(kp, 'not supported');
        }
      }
    } else {
      findings.error(fp, `listener filter ${type} is not supported (TLS/PROXY inspection and the like change what the listener accepts)`);
    }
  });
}

/** The filter's exact "@type" URL (or its canonical name, for the empty-config filters); undefined after an error. */
/**
 * Calls fn for each entry of a filter list whose type is known (filterType reports the others),
 * with its typed_config ({} when it has none) and its path.
 */
function forEachFilter(
  list: unknown[],
  path: Segment[],
  findings: Findings,
  fn: (type: string, config: Record<string, unknown>, fp: Segment[], f: unknown) => void,
): void {
  list.forEach((f: unknown, i) => {
    const fp = [...path, i];
    const type = filterType(f, fp, findings);
    if (type === undefined) return;
    fn(type, isRecord(f) && isRecord(f['typed_config']) ? f['typed_config'] : {}, fp, f);
  });
}

function filterType(f: unknown, path: Segment[], findings: Findings): string | undefined {
  if (!isRecord(f)) {
    findings.error(path, `expected a filter mapping, got ${describe(f)}`);
    return undefined;
  }
  if (f['config'] !== undefined) {
    findings.error([...path, 'config'], 'an Envoy v2 filter config ("config:"): only v3 bootstraps with typed_config are read');
    return undefined;
  }
  const tc = f['typed_config'];
  if (tc === undefined) {
    const byName = typeof f['name'] === 'string' ? NAME_ONLY[f['name']] : undefined;
    if (byName !== undefined) return byName;
    findings.error(path, `filter ${describe(f['name'])} has no typed_config with an "@type"`);
    return undefined;
  }
  const url = isRecord(tc) ? tc['@type'] : undefined;
  if (typeof url !== 'string') {
    findings.error([...path, 'typed_config'], 'expected a mapping with an "@type" URL');
    return undefined;
  }
  if (isV2TypeUrl(url)) {
    findings.error([...path, 'typed_config', '@type'], `${url} is an Envoy v2 type: only v3 bootstraps are read`);
    return undefined;
  }
  return url;
}

type Chain =
  | { kind: 'tcp'; idleTimeout?: { value: string; path: Segment[] } }
  | { kind: 'http'; http: Obj };

function mapFilterChains(value: unknown, path: Segment[], clusters: Map<string, OriginalDstCluster>, findings: Findings): Chain | undefined {
  if (!Array.isArray(value) || value.length === 0) {
    findings.error(path, 'expected one filter chain');
    return undefined;
  }
  value.slice(1).forEach((_, i) => findings.error([...path, i + 1], 'more than one filter chain: splicegate listeners have one (filter_chain_match routing is not supported)'));
  const fc: unknown = value[0];
  const fcp = [...path, 0];
  if (!isRecord(fc)) {
    findings.error(fcp, `expected a filter chain mapping, got ${describe(fc)}`);
    return undefined;
  }
  let chain: Chain | undefined;
  for (const [key, v] of Object.entries(fc)) {
    const kp = [...fcp, key];
    if (key === 'name') continue;
    if (key === 'filters') {
      chain = mapNetworkFilters(v, kp, clusters, findings);
    } else if (key === 'filter_chain_match') {
      if (!(isRecord(v) && Object.keys(v).length === 0)) findings.error(kp, 'not supported: splicegate takes every connection on the listener');
    } else if (key === 'transport_socket') {
      findings.error(kp, 'TLS termination is not supported: splicegate relays bytes as they come');
    } else if (HARMLESS_FILTER_CHAIN.has(key)) {
      findings.warn(kp, 'ignored');
    } else {
      findings.error(kp, 'not supported');
    }
  }
  if (chain === undefined && fc['filters'] === undefined) findings.error([...fcp, 'filters'], 'required: a tcp_proxy or http_connection_manager filter');
  return chain;
}

function mapNetworkFilters(value: unknown, path: Segment[], clusters: Map<string, OriginalDstCluster>, findings: Findings): Chain | undefined {
  if (!Array.isArray(value) || value.length === 0) {
    findings.error(path, 'expected a list with a tcp_proxy or http_connection_manager filter');
    return undefined;
  }
  let chain: Chain | undefined;
  forEachFilter(value, path, findings, (type, config, fp) => {
    if (chain !== undefined) {
      findings.error(fp, `filter ${type} after the terminal filter`);
    } else if (type === TYPE.tcpProxy) {
      chain = mapTcpProxy(config, [...fp, 'typed_config'], clusters, findings);
    } else if (type === TYPE.httpConnectionManager) {
      chain = mapHcm(config, [...fp, 'typed_config'], clusters, findings);
    } else {
      findings.error(fp, `network filter ${type} is not supported (RBAC, authorization, rate limits and other filters change who may connect or what is relayed)`);
    }
  });
  return chain;
}

/** The ORIGINAL_DST cluster a route or tcp_proxy names; undefined (with a finding) otherwise. */
function originalDstCluster(name: unknown, path: Segment[], clusters: Map<string, OriginalDstCluster>, findings: Findings): OriginalDstCluster | undefined {
  if (typeof name !== 'string') {
    findings.error(path, `expected a cluster name, got ${describe(name)}`);
    return undefined;
  }
  const c = clusters.get(name);
  if (c === undefined) findings.error(path, `cluster ${JSON.stringify(name)} is not an ORIGINAL_DST cluster of this file: traffic to it cannot be converted`);
  return c;
}

function mapTcpProxy(config: Obj, path: Segment[], clusters: Map<string, OriginalDstCluster>, findings: Findings): Chain | undefined {
  let target: OriginalDstCluster | undefined;
  let idleTimeout: { value: string; path: Segment[] } | undefined;
  for (const [key, v] of Object.entries(config)) {
    const kp = [...path, key];
    if (key === '@type') continue;
    if (key === 'cluster') {
      target = originalDstCluster(v, kp, clusters, findings);
    } else if (key === 'idle_timeout') {
      const ms = envoyDurationMs(v);
      if (typeof ms === 'string') findings.error(kp, ms);
      else if (ms === 0) findings.warn(kp, 'ignored: Envoy\'s 0 (no idle timeout) has no splicegate equivalent; cluster.idle_timeout keeps its default');
      else idleTimeout = { value: splicegateDuration(ms), path: kp };
    } else if (HARMLESS_TCP_PROXY.has(key)) {
      findings.warn(kp, 'ignored');
    } else {
      findings.error(kp, 'not supported (weighted clusters, tunneling, metadata matches and the like change where traffic goes)');
    }
  }
  if (target === undefined) {
    if (config['cluster'] === undefined) findings.error([...path, 'cluster'], 'required: the ORIGINAL_DST cluster');
    return undefined;
  }
  return idleTimeout === undefined ? { kind: 'tcp' } : { kind: 'tcp', idleTimeout };
}

function mapHcm(config: Obj, path: Segment[], clusters: Map<string, OriginalDstCluster>, findings: Findings): Chain | undefined {
  const http: Obj = {};
  let routes: Routes = { targets: [], count: 0, lost: false };
  let connect = false;
  for (const [key, v] of Object.entries(config)) {
    const kp = [...path, key];
    switch (key) {
      case '@type':
        break;
      case 'codec_type':
        if (v !== 'AUTO' && v !== 'HTTP1') findings.error(kp, `${describe(v)}: splicegate's HTTP listener speaks HTTP/1.1`);
        break;
      case 'route_config':
        routes = mapRouteConfig(v, kp, clusters, findings);
        break;
      case 'http_filters':
        mapHttpFilters(v, kp, findings);
        break;
      case 'upgrade_configs':
        connect = mapUpgradeConfigs(v, kp, findings);
        break;
      case 'request_headers_timeout': {
        const ms = envoyDurationMs(v);
        if (typeof ms === 'number' && ms > 0) http['request_head_timeout'] = splicegateDuration(ms);
        else findings.warn(kp, `ignored: ${typeof ms === 'string' ? ms : 'no timeout has no splicegate equivalent'}`);
        break;
      }
      case 'max_request_headers_kb': {
        const kb = envoyUint(v);
        if (typeof kb === 'string') {
          findings.error(kp, kb);
          break;
        }
        const bytes = Math.min(Math.max(kb * 1024, MIN_REQUEST_HEAD_BYTES), MAX_REQUEST_HEAD_BYTES);
        if (bytes !== kb * 1024) findings.warn(kp, `${kb} KiB is outside splicegate's range: ${bytes} bytes`);
        http['max_request_head_bytes'] = bytes;
        break;
      }
      case 'rds':
      case 'scoped_routes':
        findings.error(kp, 'dynamic routes are not supported (static route_config only)');
        break;
      default:
        if (HARMLESS_HCM.has(key)) findings.warn(kp, 'ignored');
        else findings.error(kp, 'not supported');
    }
  }
  if (config['route_config'] === undefined && config['rds'] === undefined) findings.error([...path, 'route_config'], 'required: routes to the ORIGINAL_DST cluster');
  else if (isRecord(config['route_config']) && routes.count === 0) {
    // Envoy answers every request with 404; a converted listener would relay them all.
    findings.error([...path, 'route_config'], 'no route: not converted (splicegate sends every request to the ORIGINAL_DST cluster)');
  }
  // A route to anything but an ORIGINAL_DST cluster (reported where it is) leaves the listener out,
  // lenient or not: its requests would otherwise go to the original destination instead.
  const targets = routes.targets;
  if (targets.length === 0 || routes.lost) return undefined;
  const first = targets[0] as OriginalDstCluster;
  for (const t of targets.slice(1)) {
    if (t.useHttpHeader !== first.useHttpHeader || t.headerName !== first.headerName) {
      findings.error(t.path, `routes of one listener reach ORIGINAL_DST clusters ${JSON.stringify(first.name)} and ${JSON.stringify(t.name)} with different header settings`);
      return undefined;
    }
  }
  http['header_name'] = first.headerName;
  if (first.useHttpHeader) {
    http['trusted_sources'] = TRUST_EVERYONE;
    findings.warn([...first.path, 'original_dst_lb_config', 'use_http_header'], `the ${first.headerName} header is honoured from every client, as in Envoy (any client can pick any destination): narrow http.trusted_sources in the converted config (splicegate convert --envoy)`);
  } else {
    http['trusted_sources'] = [];
  }
  http['connect'] = connect;
  return { kind: 'http', http };
}

function mapUpgradeConfigs(value: unknown, path: Segment[], findings: Findings): boolean {
  if (!Array.isArray(value)) {
    findings.error(path, `expected a list, got ${describe(value)}`);
    return false;
  }
  let connect = false;
  value.forEach((u: unknown, i) => {
    const up = [...path, i];
    const type = isRecord(u) ? u['upgrade_type'] : undefined;
    if (isRecord(u)) {
      // enabled: false turns the upgrade off in Envoy; upgrade filters change what is relayed.
      for (const key of Object.keys(u)) {
        if (key !== 'upgrade_type' && key !== 'enabled') findings.error([...up, key], 'not supported (upgrade filters change what is relayed)');
      }
      const enabled = u['enabled'] === undefined ? true : envoyBool(u['enabled']);
      if (enabled === undefined) {
        findings.error([...up, 'enabled'], `expected true or false, got ${describe(u['enabled'])}`);
        return;
      }
      if (!enabled) {
        if (isConnectType(type)) return; // CONNECT stays refused
        findings.warn([...up, 'enabled'], `ignored: splicegate relays any upgrade the server accepts (${describe(type)})`);
        return;
      }
    }
    if (isConnectType(type)) connect = true;
    else if (typeof type === 'string' && type.toLowerCase() === 'websocket') return; // splicegate splices every 101 upgrade
    else findings.warn([...path, i], `ignored: splicegate relays any upgrade the server accepts (${describe(type)})`);
  });
  return connect;
}

/** An upgrade_type naming CONNECT (Envoy compares it case-insensitively). */
function isConnectType(type: unknown): boolean {
  return typeof type === 'string' && type.toUpperCase() === 'CONNECT';
}

function mentionsConnect(value: unknown): boolean {
  return Array.isArray(value) && value.some((u: unknown) => isRecord(u) && isConnectType(u['upgrade_type']));
}

function mapHttpFilters(value: unknown, path: Segment[], findings: Findings): void {
  if (!Array.isArray(value)) {
    findings.error(path, `expected a list, got ${describe(value)}`);
    return;
  }
  forEachFilter(value, path, findings, (type, config, fp) => {
    if (type !== TYPE.router) {
      findings.error(fp, `HTTP filter ${type} is not supported (RBAC, ext_authz, header mutation and other filters change routing or security)`);
    } else {
      for (const key of Object.keys(config)) if (key !== '@type') findings.warn([...fp, 'typed_config', key], 'ignored');
    }
  });
}

/** The ORIGINAL_DST clusters a route config reaches; `lost` when a route goes elsewhere (or nowhere known). */
interface Routes {
  targets: OriginalDstCluster[];
  /** Routes seen, whatever they match or reach. */
  count: number;
  lost: boolean;
}

function mapRouteConfig(value: unknown, path: Segment[], clusters: Map<string, OriginalDstCluster>, findings: Findings): Routes {
  const routes: Routes = { targets: [], count: 0, lost: false };
  if (!isRecord(value)) {
    findings.error(path, `expected a mapping, got ${describe(value)}`);
    return routes;
  }
  for (const [key, v] of Object.entries(value)) {
    const kp = [...path, key];
    if (key === 'name') continue;
    if (key !== 'virtual_hosts') {
      findings.error(kp, 'not supported');
      continue;
    }
    if (!Array.isArray(v)) {
      findings.error(kp, `expected a list, got ${describe(v)}`);
      continue;
    }
    v.forEach((vh: unknown, i) => mapVirtualHost(vh, [...kp, i], clusters, findings, routes));
  }
  return routes;
}

function mapVirtualHost(vh: unknown, path: Segment[], clusters: Map<string, OriginalDstCluster>, findings: Findings, routes: Routes): void {
  if (!isRecord(vh)) {
    findings.error(path, `expected a mapping, got ${describe(vh)}`);
    return;
  }
  for (const [key, v] of Object.entries(vh)) {
    const kp = [...path, key];
    if (key === 'name') continue;
    if (key === 'domains') {
      if (!(Array.isArray(v) && v.includes('*'))) findings.error(kp, `${describe(v)}: only domains ["*"] maps (splicegate routes requests for every Host the same way)`);
    } else if (key === 'routes') {
      if (!Array.isArray(v)) {
        findings.error(kp, `expected a list, got ${describe(v)}`);
        continue;
      }
      v.forEach((r: unknown, i) => {
        routes.count += 1;
        const target = mapRoute(r, [...kp, i], clusters, findings);
        if (target === undefined) routes.lost = true;
        else if (!routes.targets.includes(target)) routes.targets.push(target);
      });
    } else if (HARMLESS_VHOST.has(key)) {
      findings.warn(kp, 'ignored');
    } else {
      findings.error(kp, 'not supported (it changes routing or what is sent)');
    }
  }
}

function mapRoute(r: unknown, path: Segment[], clusters: Map<string, OriginalDstCluster>, findings: Findings): OriginalDstCluster | undefined {
  if (!isRecord(r)) {
    findings.error(path, `expected a mapping, got ${describe(r)}`);
    return undefined;
  }
  let target: OriginalDstCluster | undefined;
  for (const [key, v] of Object.entries(r)) {
    const kp = [...path, key];
    if (key === 'name') continue;
    if (key === 'match') {
      const catchAll = isRecord(v) && Object.keys(v).length === 1 && (v['prefix'] === '/' || v['prefix'] === '' || v['connect_matcher'] !== undefined);
      if (!catchAll) findings.error(kp, 'only a catch-all match (prefix "/", or connect_matcher) maps: splicegate sends every request to the ORIGINAL_DST cluster');
    } else if (key === 'route') {
      if (!isRecord(v)) {
        findings.error(kp, `expected a mapping, got ${describe(v)}`);
        continue;
      }
      for (const [rk, rv] of Object.entries(v)) {
        const rp = [...kp, rk];
        if (rk === 'cluster') target = originalDstCluster(rv, rp, clusters, findings);
        else if (rk === 'upgrade_configs' && mentionsConnect(rv)) {
          // A route can turn CONNECT on or off against the HCM's setting; splicegate has one per listener.
          findings.error(rp, 'a per-route CONNECT setting is not supported: set upgrade_configs on the http_connection_manager');
        } else if (HARMLESS_ROUTE_ACTION.has(rk)) findings.warn(rp, 'ignored');
        else findings.error(rp, 'not supported (rewrites, weighted or header-chosen clusters, mirrors change the request or its destination)');
      }
      if (v['cluster'] === undefined) findings.error(kp, 'only route.cluster naming the ORIGINAL_DST cluster maps');
    } else if (key === 'redirect' || key === 'direct_response') {
      findings.error(kp, 'not supported: splicegate forwards every request');
    } else {
      findings.error(kp, 'not supported (header mutations and per-filter configs change what is sent)');
    }
  }
  if (r['match'] === undefined) findings.error([...path, 'match'], 'required');
  return target;
}
