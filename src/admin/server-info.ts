// GET /server_info: what the process is (version, uptime, config file, workers, listeners), for the
// dashboard's header and listener table. Built from the config and the supervisor's bookkeeping on
// the main thread: answering it asks the workers nothing.

import type { ListenerConfig, PolicyConfig, SplicegateConfig } from '../config/types';

export interface PolicyInfo {
  /** "listener": the listener's own policy; "top-level": the config's policy applies. */
  scope: 'listener' | 'top-level';
  default_action: 'allow' | 'deny';
  deny_special: boolean;
  /** Rule names in order (the counters are policy.<name>.denied). */
  rules: string[];
}

export interface ListenerInfo {
  name: string;
  address: string;
  mode: string;
  /** tcp or udp (listeners[].protocol). */
  protocol: string;
  transparent: boolean;
  proxy_protocol: 'off' | 'optional' | 'required';
  policy: PolicyInfo;
}

/** Field names are a contract (the dashboard reads them): add fields, never rename. */
export interface ServerInfo {
  version: string;
  started_at: string;
  uptime_s: number;
  /** The config file path, or "(built-in default config)". */
  config_file: string;
  state: 'ready' | 'starting' | 'draining';
  workers: { configured: number; alive: number; restarts: number };
  listeners: ListenerInfo[];
}

export interface ServerInfoSource {
  version: string;
  startedAtMs: number;
  configFile: string;
  /** The config in force (a function, so a reload's new config is what is shown). */
  config(): SplicegateConfig;
  readiness(): { ready: boolean; detail: string };
  workersAlive(): number;
  workerRestarts(): number;
}

function policyInfo(policy: PolicyConfig, scope: PolicyInfo['scope']): PolicyInfo {
  return { scope, default_action: policy.defaultAction, deny_special: policy.denySpecial, rules: policy.rules.map((r) => r.name) };
}

export function listenerInfo(listener: ListenerConfig, topLevel: PolicyConfig): ListenerInfo {
  const pp = listener.proxyProtocol;
  return {
    name: listener.name,
    address: listener.address.text,
    mode: listener.mode,
    protocol: listener.protocol,
    transparent: listener.transparent,
    proxy_protocol: pp === null ? 'off' : pp.required ? 'required' : 'optional',
    policy: listener.policy === null ? policyInfo(topLevel, 'top-level') : policyInfo(listener.policy, 'listener'),
  };
}

export function serverInfo(source: ServerInfoSource, nowMs = Date.now()): ServerInfo {
  const config = source.config();
  const { ready, detail } = source.readiness();
  return {
    version: source.version,
    started_at: new Date(source.startedAtMs).toISOString(),
    uptime_s: Math.max(0, Math.round((nowMs - source.startedAtMs) / 1000)),
    config_file: source.configFile,
    state: ready ? 'ready' : detail === 'draining' ? 'draining' : 'starting',
    workers: { configured: config.workers, alive: source.workersAlive(), restarts: source.workerRestarts() },
    listeners: config.listeners.map((l) => listenerInfo(l, config.policy)),
  };
}
