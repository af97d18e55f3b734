// The process's listening sockets: one per configured listener address, opened by the main thread
// before any worker attaches, and kept open while workers come and go. Workers attach to them by
// fd number. A socket is never closed while a worker may still be attaching to it, and only its
// closing ends its accept queue: a worker's death or restart never does, and neither does a reload
// that keeps the listener (the new config generation leases the same socket, by address).
//
// A ListenSocketPool owns the sockets and counts leases: each config generation holds one lease
// (ListenSockets) on the sockets of its listeners, and a socket closes when its last lease is
// released, i.e. once every generation that used it has stopped accepting on it.

import { addressKey } from '../config/address';
import { listenerPolicyIndexes } from '../config/policy-native';
import type { ConfigProblem } from '../config/problems';
import type { ListenerConfig } from '../config/types';
import type { NativeBinding, NativeListenerOptions, ListenSocket } from '../native/binding';
import type { ListenerHandoff } from '../worker/messages';

/** policy: the listener's index into NativeWorkerOptions.policies (listenerPolicyIndexes). */
export function nativeListenerOptions(l: ListenerConfig, policy: number): NativeListenerOptions {
  return {
    name: l.name,
    host: l.address.host,
    port: l.address.port,
    transparent: l.transparent,
    ...(l.protocol === 'udp' ? { protocol: 'udp' as const } : {}),
    backlog: l.backlog,
    policy,
    ...(l.proxyProtocol
      ? {
          proxyProtocol: {
            trustedSources: l.proxyProtocol.trustedSources.map((c) => c.text),
            required: l.proxyProtocol.required,
            timeoutMs: l.proxyProtocol.timeoutMs,
          },
        }
      : {}),
    ...(l.mode === 'http' && l.http
      ? {
          http: {
            headerName: l.http.headerName,
            trustedSources: l.http.trustedSources.map((c) => c.text),
            stripHeader: l.http.stripHeader,
            connect: l.http.connect,
            requestHeadTimeoutMs: l.http.requestHeadTimeoutMs,
            maxRequestHeadBytes: l.http.maxRequestHeadBytes,
          },
        }
      : {}),
  };
}

/** A TCP and a UDP listener may share an ip:port: they are different sockets. */
function socketKey(l: ListenerConfig): string {
  return l.protocol === 'udp' ? `udp/${addressKey(l.address)}` : addressKey(l.address);
}

interface PooledSocket {
  key: string;
  socket: ListenSocket;
  /** What the socket was opened with and cannot change while it stays open. */
  transparent: boolean;
  backlog: number;
  leases: number;
}

/** The listen-socket options a kept socket cannot change (setting them would mean a new socket). */
const FIXED_OPTIONS = ['transparent', 'backlog'] as const;

export class ListenSocketPool {
  private readonly sockets = new Map<string, PooledSocket>();
  /** Sockets a service manager passed (socket-activation.ts), by address key: taken over, not bound. */
  private readonly passed: Map<string, number>;

  /**
   * passed: listener address -> an fd the service manager passed (socket activation). The first
   * lease of that address takes the fd over instead of binding a new socket.
   */
  constructor(
    private readonly binding: Pick<NativeBinding, 'ListenSocket'>,
    passed: ReadonlyMap<string, number> = new Map(),
  ) {
    this.passed = new Map(passed);
  }

  /**
   * Problems that stop `listeners` from reusing this pool's open sockets: a listener on an address
   * that is open already must ask for the same socket options, since applying another one means
   * closing the socket, and with it everything queued on it.
   */
  conflicts(listeners: readonly ListenerConfig[]): ConfigProblem[] {
    const problems: ConfigProblem[] = [];
    listeners.forEach((l, i) => {
      const open = this.sockets.get(socketKey(l));
      if (!open) return;
      for (const option of FIXED_OPTIONS) {
        if (open[option] !== l[option]) {
          problems.push({
            path: `listeners[${i}].${option}`,
            message: `${l.address.text} is open with ${option} ${String(open[option])}; a reload keeps a listening socket (closing it would reset its queue), so changing ${option} needs a restart`,
          });
        }
      }
    });
    return problems;
  }

  /**
   * Leases a socket for every listener, or none: a listener whose address is open already shares
   * that socket, the others are opened; if one fails (EADDRINUSE, ...) the sockets this call opened
   * are closed again and the error is thrown.
   */
  lease(listeners: readonly ListenerConfig[]): ListenSockets {
    const leased: Array<{ entry: PooledSocket; options: NativeListenerOptions }> = [];
    try {
      const policyIndex = listenerPolicyIndexes(listeners);
      for (const [i, l] of listeners.entries()) {
        const options = nativeListenerOptions(l, policyIndex[i] ?? 0);
        const key = socketKey(l);
        let entry = this.sockets.get(key);
        if (!entry) {
          const fd = this.passed.get(key);
          this.passed.delete(key);
          const socket = fd === undefined ? new this.binding.ListenSocket(options) : new this.binding.ListenSocket(options, fd);
          entry = { key, socket, transparent: l.transparent, backlog: l.backlog, leases: 0 };
          this.sockets.set(key, entry);
        }
        entry.leases += 1;
        leased.push({ entry, options });
      }
    } catch (err) {
      for (const { entry } of leased) this.release(entry);
      throw err;
    }
    return new ListenSockets(this, leased);
  }

  /** Open sockets (for tests and logs). */
  get size(): number {
    return this.sockets.size;
  }

  /** @internal ListenSockets.close() */
  release(entry: PooledSocket): void {
    entry.leases -= 1;
    if (entry.leases > 0) return;
    entry.socket.close();
    this.sockets.delete(entry.key);
  }
}

/** One config generation's lease on the listening sockets of its listeners, in config order. */
export class ListenSockets {
  private released = false;

  constructor(
    private readonly pool: ListenSocketPool,
    private readonly leased: ReadonlyArray<{ entry: PooledSocket; options: NativeListenerOptions }>,
  ) {}

  /** A pool of its own with one lease on every listener, or none (see ListenSocketPool.lease). */
  static open(binding: Pick<NativeBinding, 'ListenSocket'>, listeners: readonly ListenerConfig[]): ListenSockets {
    return new ListenSocketPool(binding).lease(listeners);
  }

  /** What each worker gets: the listener's options and the socket's fd, in config order. */
  handoffs(): ListenerHandoff[] {
    return this.leased.map(({ entry, options }) => ({ options, fd: entry.socket.fd }));
  }

  addresses(): string[] {
    return this.leased.map(({ entry }) => entry.socket.address);
  }

  /**
   * Idempotent. Gives the lease back: a socket no other generation leases closes, and connections
   * still queued on it are reset by the kernel once no worker holds a dup.
   */
  close(): void {
    if (this.released) return;
    this.released = true;
    for (const { entry } of this.leased) this.pool.release(entry);
  }
}
