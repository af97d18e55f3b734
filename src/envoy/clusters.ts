// static_resources.clusters: the ORIGINAL_DST clusters (by name, for the listeners' routes), and
// their settings folded into splicegate's one cluster (timeouts, per-host limits, upstream mark).

import type { Findings, Segment } from './findings';
import type { ClusterOut, OriginalDstCluster, OriginalDstClusters } from './model';
import { describe, envoyDurationMs, envoyUint, isRecord, splicegateDuration } from './values';

const DEFAULT_ENVOY_HEADER = 'x-envoy-original-dst-host';
const SOL_SOCKET = 1;
const SO_MARK = 36;

// Keys dropped with a warning: they change neither where traffic goes nor who may send it.
const HARMLESS_CLUSTER = new Set(['dns_lookup_family', 'dns_refresh_rate', 'dns_failure_refresh_rate', 'respect_dns_ttl', 'dns_resolvers', 'use_tcp_for_dns_lookups', 'dns_resolution_config', 'typed_dns_resolver_config', 'per_connection_buffer_limit_bytes', 'common_lb_config', 'health_checks', 'outlier_detection', 'upstream_connection_options', 'close_connections_on_host_health_failure', 'ignore_health_on_host_removal', 'track_cluster_stats', 'track_timeout_budgets', 'alt_stat_name', 'metadata', 'common_http_protocol_options', 'http_protocol_options', 'connection_pool_per_downstream_connection', 'wait_for_warm_on_init', 'protocol_selection']);

export function mapClusters(value: unknown, path: Segment[], out: ClusterOut, findings: Findings): OriginalDstClusters {
  const result: OriginalDstClusters = new Map();
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
