// Envoy v3 bootstrap (static_resources) -> splicegate config, in the file's own snake_case form so
// it can be printed (`convert --envoy`) and then validated by the one schema (src/config/schema.ts).
// What maps is in docs/ENVOY.md; everything else becomes a Finding at its path in the Envoy file.

import { mapClusters } from './clusters';
import { Findings, type Segment } from './findings';
import { mapListeners } from './listeners';
import { ClusterOut, type Obj } from './model';
import { describe, envoySocketAddress, isRecord } from './values';
import { DEFAULTS } from '../config/schema';

export interface Conversion {
  /** splicegate config in file form; undefined when nothing runnable is left. */
  config: Record<string, unknown> | undefined;
  findings: Findings;
}

// Keys dropped with a warning: they change neither where traffic goes nor who may send it.
const HARMLESS_BOOTSTRAP = new Set(['node', 'node_context_params', 'layered_runtime', 'runtime', 'stats_sinks', 'stats_config', 'stats_flush_interval', 'stats_flush_on_admin', 'watchdog', 'watchdogs', 'tracing', 'overload_manager', 'cluster_manager', 'flags_path', 'hds_config', 'enable_dispatcher_stats', 'header_prefix', 'stats_server_version_override', 'use_time_system', 'fatal_actions', 'default_regex_engine', 'application_log_config', 'bootstrap_extensions']);
const HARMLESS_ADMIN = new Set(['access_log_path', 'access_log', 'profile_path', 'socket_options', 'ignore_global_conn_limit']);

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
