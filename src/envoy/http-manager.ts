// An http_connection_manager filter: the HTTP listener it converts to (head limits, CONNECT), and
// its routes, which must all reach ORIGINAL_DST clusters with the same header settings.

import type { Findings, Segment } from './findings';
import { forEachFilter } from './filters';
import { type Chain, type Obj, type OriginalDstCluster, type OriginalDstClusters, originalDstCluster } from './model';
import { TYPE } from './type-urls';
import { describe, envoyBool, envoyDurationMs, envoyUint, isRecord, splicegateDuration } from './values';
import { MAX_REQUEST_HEAD_BYTES, MIN_REQUEST_HEAD_BYTES } from '../config/schema';

/** Envoy honours the header from every client; so does the converted listener (with a warning). */
const TRUST_EVERYONE = ['0.0.0.0/0', '::/0'];

// Keys dropped with a warning: they change neither where traffic goes nor who may send it.
const HARMLESS_HCM = new Set(['stat_prefix', 'access_log', 'access_log_options', 'use_remote_address', 'xff_num_trusted_hops', 'skip_xff_append', 'via', 'generate_request_id', 'preserve_external_request_id', 'always_set_request_id_in_response', 'server_name', 'server_header_transformation', 'common_http_protocol_options', 'http_protocol_options', 'stream_idle_timeout', 'request_timeout', 'drain_timeout', 'delayed_close_timeout', 'normalize_path', 'merge_slashes', 'path_with_escaped_slashes_action', 'tracing', 'strip_matching_host_port', 'strip_any_host_port', 'internal_address_config', 'add_user_agent', 'represent_ipv4_remote_address_as_ipv4_mapped_ipv6', 'forward_client_cert_details', 'set_current_client_cert_details', 'proxy_100_continue', 'stream_error_on_invalid_http_message', 'max_request_headers_count']);
const HARMLESS_ROUTE_ACTION = new Set(['timeout', 'idle_timeout', 'retry_policy', 'max_stream_duration', 'max_grpc_timeout', 'upgrade_configs']);
const HARMLESS_VHOST = new Set(['cors', 'retry_policy', 'include_request_attempt_count', 'include_attempt_count_in_response']);

export function mapHcm(config: Obj, path: Segment[], clusters: OriginalDstClusters, findings: Findings): Chain | undefined {
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
    // Envoy tunnels such a CONNECT to the connection's original destination; splicegate tunnels a
    // CONNECT to the target it names, and so only for trusted clients: here, for nobody.
    if (connect) findings.warn([...path, 'upgrade_configs'], `CONNECT: splicegate tunnels a CONNECT to the target it names, only for clients in http.trusted_sources, which use_http_header false leaves empty: every CONNECT gets 403 connect_untrusted until the clients that may choose a destination are listed there`);
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

function mapRouteConfig(value: unknown, path: Segment[], clusters: OriginalDstClusters, findings: Findings): Routes {
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

function mapVirtualHost(vh: unknown, path: Segment[], clusters: OriginalDstClusters, findings: Findings, routes: Routes): void {
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

function mapRoute(r: unknown, path: Segment[], clusters: OriginalDstClusters, findings: Findings): OriginalDstCluster | undefined {
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
