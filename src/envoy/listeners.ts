// static_resources.listeners: each listener, its listener filters (original_dst, original_src) and
// its one filter chain, whose terminal filter is tcp_proxy (a relay) or http_connection_manager.

import type { Findings, Segment } from './findings';
import { forEachFilter } from './filters';
import { mapHcm } from './http-manager';
import { type Chain, type ClusterOut, type Obj, type OriginalDstCluster, type OriginalDstClusters, originalDstCluster } from './model';
import { TYPE } from './type-urls';
import { describe, envoyBool, envoyDurationMs, envoySocketAddress, envoyUint, isRecord, splicegateDuration } from './values';
import { LISTENER_NAME_RE } from '../config/schema';

// Keys dropped with a warning: they change neither where traffic goes nor who may send it.
const HARMLESS_LISTENER = new Set(['stat_prefix', 'per_connection_buffer_limit_bytes', 'listener_filters_timeout', 'continue_on_listener_filters_timeout', 'traffic_direction', 'socket_options', 'freebind', 'enable_reuse_port', 'reuse_port', 'access_log', 'connection_balance_config', 'drain_type', 'metadata', 'ignore_global_conn_limit', 'enable_mptcp', 'tcp_fast_open_queue_length', 'max_connections_to_accept_per_socket_event']);
const HARMLESS_FILTER_CHAIN = new Set(['transport_socket_connect_timeout', 'metadata']);
const HARMLESS_TCP_PROXY = new Set(['stat_prefix', 'access_log', 'access_log_options', 'max_connect_attempts', 'max_downstream_connection_duration', 'downstream_idle_timeout', 'upstream_idle_timeout', 'flush_access_log_on_connected', 'backoff_options']);

export function mapListeners(value: unknown, path: Segment[], clusters: OriginalDstClusters, out: ClusterOut, findings: Findings): Obj[] {
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

function mapListener(l: unknown, lp: Segment[], index: number, clusters: OriginalDstClusters, out: ClusterOut, findings: Findings): Obj | undefined {
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

function mapFilterChains(value: unknown, path: Segment[], clusters: OriginalDstClusters, findings: Findings): Chain | undefined {
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

function mapNetworkFilters(value: unknown, path: Segment[], clusters: OriginalDstClusters, findings: Findings): Chain | undefined {
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

function mapTcpProxy(config: Obj, path: Segment[], clusters: OriginalDstClusters, findings: Findings): Chain | undefined {
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
