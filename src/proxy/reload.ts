// Zero-downtime reload (SIGHUP, POST /reload): re-read the config file and, if it is valid, start a
// new config generation on it, then retire the old one. Listening sockets whose address stays in
// the config are never closed: the new generation leases the same sockets (same fds) and attaches
// its workers to them before the old generation stops accepting, so nothing queued is lost and no
// connection is refused in between. Connections the old generation accepted finish under the old
// settings, bounded by the new config's drain_timeout. An invalid config (or one a reload cannot
// apply) is refused with every problem, and the running generation keeps serving untouched.

import { addressKey } from '../config/address';
import { ConfigError, formatProblems, loadConfigFile, type ConfigProblem } from '../config/load';
import { formatSystemError, isOutOfResources, isSystemError } from '../config/syserr';
import type { SplicegateConfig } from '../config/types';
import type { GenerationInfo } from '../supervisor/generation';
import type { Logger } from '../util/logger';
import type { ListenSocketPool } from './listen-sockets';
import type { ProxyRuntime } from './runtime';

export interface ListenerChanges {
  /** Listener addresses (canonical text) whose sockets the new generation opened. */
  added: string[];
  /** Addresses the new config no longer has: closed once the old generation left them. */
  removed: string[];
  /** Addresses whose socket (fd and queue) carried over. */
  kept: string[];
}

export type ReloadOutcome =
  | { ok: true; generation: GenerationInfo; previous: number; listeners: ListenerChanges; workers: { before: number; after: number } }
  | {
      ok: false;
      /** invalid: the file's content (problems listed); refused: not now or not possible; failed: applying it failed. */
      reason: 'invalid' | 'refused' | 'failed';
      message: string;
      problems: ConfigProblem[];
      /** The running generation, which keeps serving. */
      generation: GenerationInfo;
    };

export interface ReloaderOptions {
  runtime: ProxyRuntime;
  pool: ListenSocketPool;
  /** The file `run --config` named; undefined when running the built-in config (nothing to re-read). */
  configPath: string | undefined;
  log: Logger;
  /** Injectable for tests; loadConfigFile by default. */
  load?: (path: string) => SplicegateConfig;
  /**
   * Readies what the main thread owns for the new config (the access log's file) before the new
   * generation starts; a rejection refuses the reload. commit() runs once the new generation is
   * active, abort() if it failed to start.
   */
  prepare?: (config: SplicegateConfig) => Promise<{ commit(): void; abort(): Promise<void> }>;
}

/** HTTP status and JSON body of POST /reload for an outcome. */
export function reloadResponse(outcome: ReloadOutcome): { status: number; body: unknown } {
  if (outcome.ok) {
    return {
      status: 200,
      body: {
        ok: true,
        config_generation: generationJson(outcome.generation),
        previous_generation: outcome.previous,
        listeners: outcome.listeners,
        workers: outcome.workers,
      },
    };
  }
  const status = outcome.reason === 'invalid' ? 422 : outcome.reason === 'refused' ? 409 : 500;
  return {
    status,
    body: {
      ok: false,
      reason: outcome.reason,
      error: outcome.message,
      problems: outcome.problems,
      config_generation: generationJson(outcome.generation),
    },
  };
}

export function generationJson(g: GenerationInfo): { number: number; file: string; loaded_at: string; workers: number } {
  return { number: g.number, file: g.source, loaded_at: g.loadedAt, workers: g.workers };
}

export class Reloader {
  private readonly load: (path: string) => SplicegateConfig;
  /**
   * A reload that waits its turn and has not read the file yet. Requests arriving meanwhile join
   * it: it will read the file as it is when it runs, which is all each of them asks for, so a storm
   * of SIGHUPs or POST /reload starts one generation instead of one per request.
   */
  private waiting: Promise<ReloadOutcome> | undefined;

  constructor(private readonly options: ReloaderOptions) {
    this.load = options.load ?? loadConfigFile;
  }

  /** Serialised with other reloads and with drain; `trigger` (SIGHUP, POST /reload) is logged. */
  reload(trigger: string): Promise<ReloadOutcome> {
    const { runtime, log } = this.options;
    if (runtime.isDraining) return Promise.resolve(this.refuse('refused', 'draining: a reload is not applied during shutdown'));
    if (this.waiting) {
      log.info('reload requested; joins the reload waiting to run', { trigger });
      return this.waiting;
    }
    log.info('reload requested', { trigger });
    const run = runtime.exclusive(async () => {
      // From here on the file is read: a request arriving now needs a reload of its own.
      this.waiting = undefined;
      const outcome = await this.apply();
      runtime.countReload(outcome.ok);
      if (outcome.ok) {
        log.info('config reloaded', {
          trigger,
          config_generation: outcome.generation.number,
          previous_generation: outcome.previous,
          file: outcome.generation.source,
          workers: outcome.workers.after,
          listeners_added: outcome.listeners.added.join(',') || undefined,
          listeners_removed: outcome.listeners.removed.join(',') || undefined,
          listeners_kept: outcome.listeners.kept.join(',') || undefined,
        });
      } else {
        log.warn('reload refused; the running config keeps serving', {
          trigger,
          reason: outcome.reason,
          error: outcome.message,
          config_generation: outcome.generation.number,
        });
      }
      return outcome;
    });
    // exclusive() starts its function from a promise callback, never synchronously, so this is set
    // before the run clears it.
    this.waiting = run;
    return run;
  }

  private async apply(): Promise<ReloadOutcome> {
    const { runtime, pool, configPath, log } = this.options;
    // Checked again here: a drain that began while this reload waited its turn wins.
    if (runtime.isDraining) return this.refuse('refused', 'draining: a reload is not applied during shutdown');
    if (configPath === undefined) return this.refuse('refused', 'running the built-in config (no --config file): nothing to re-read');
    let config: SplicegateConfig;
    try {
      config = this.load(configPath);
    } catch (err) {
      if (err instanceof ConfigError) {
        // Out of fds or memory while reading it: the file may well be valid, the reload failed.
        return this.refuse(isOutOfResources(err.readErrno) ? 'failed' : 'invalid', formatProblems(err), err.problems);
      }
      throw err;
    }
    const old = runtime.active;
    const problems = [...pool.conflicts(config.listeners), ...unchangeable(old.config, config)];
    if (problems.length > 0) {
      const err = new ConfigError(configPath, problems);
      return this.refuse('invalid', formatProblems(err), problems);
    }
    let prepared;
    try {
      prepared = await this.options.prepare?.(config);
    } catch (err) {
      return this.refuse('failed', describe(err));
    }
    let generation;
    try {
      generation = await runtime.startGeneration(config, configPath);
    } catch (err) {
      // EADDRINUSE on a new listener, a worker that failed to start: the old generation never stopped.
      await prepared?.abort();
      return this.refuse('failed', describe(err));
    }
    runtime.activate(generation);
    prepared?.commit();
    // The new generation listens on every socket: only now does the old one stop accepting.
    const deadline = Date.now() + config.drainTimeoutMs;
    runtime.retire(old, deadline).catch((err: unknown) => log.error('retiring the previous config generation failed', { config_generation: old.number, error: describe(err) }));
    return {
      ok: true,
      generation: generation.info,
      previous: old.number,
      listeners: listenerChanges(old.config, config),
      workers: { before: old.config.workers, after: config.workers },
    };
  }

  private refuse(reason: 'invalid' | 'refused' | 'failed', message: string, problems: ConfigProblem[] = []): ReloadOutcome {
    return { ok: false, reason, message, problems, generation: this.options.runtime.active.info };
  }
}

/** Settings a reload cannot apply in place. */
function unchangeable(before: SplicegateConfig, after: SplicegateConfig): ConfigProblem[] {
  if (addressKey(before.admin.address) === addressKey(after.admin.address)) return [];
  return [
    {
      path: 'admin.address',
      message: `the admin endpoint listens on ${before.admin.address.text} and is not moved by a reload (it may be answering this one); restart to change it`,
    },
  ];
}

export function listenerChanges(before: SplicegateConfig, after: SplicegateConfig): ListenerChanges {
  // A TCP and a UDP listener on one address are two sockets: a UDP one is named "ip:port/udp".
  const entry = (l: SplicegateConfig['listeners'][number]): [string, string] =>
    l.protocol === 'udp' ? [`udp/${addressKey(l.address)}`, `${l.address.text}/udp`] : [addressKey(l.address), l.address.text];
  const was = new Map(before.listeners.map(entry));
  const now = new Map(after.listeners.map(entry));
  return {
    added: [...now].filter(([k]) => !was.has(k)).map(([, text]) => text),
    removed: [...was].filter(([k]) => !now.has(k)).map(([, text]) => text),
    kept: [...now].filter(([k]) => was.has(k)).map(([, text]) => text),
  };
}

function describe(err: unknown): string {
  // A bind that failed (EADDRINUSE on a new listener), a socket option refused: worded as `splicegate
  // run` words the same failure at start ("listen egress 0.0.0.0:15003: bind failed: EADDRINUSE (...)").
  if (isSystemError(err)) return formatSystemError(err);
  if (!(err instanceof Error)) return String(err);
  const e = err as Error & { code?: unknown; context?: unknown };
  // The core's errors name their context in the message already ("bind egress 0.0.0.0:15003 failed: ...").
  const where = typeof e.context === 'string' && !e.message.includes(e.context) ? ` (${e.context})` : '';
  return `${e.message}${where}`;
}
