// The process's listening sockets: one per configured listener, opened once by the main thread
// before any worker starts, and kept open while workers come and go. Workers attach to them by fd
// number. A socket is never closed while a worker may still be attaching to it, and only its
// closing (at drain) ends its accept queue: a worker's death or restart never does.

import { listenerPolicyIndexes } from '../config/policy-native';
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

export class ListenSockets {
  private constructor(private readonly sockets: Array<{ options: NativeListenerOptions; socket: ListenSocket }>) {}

  /** Opens every listener or none: on a failure (EADDRINUSE, ...) the ones already open are closed. */
  static open(binding: Pick<NativeBinding, 'ListenSocket'>, listeners: readonly ListenerConfig[]): ListenSockets {
    const opened: Array<{ options: NativeListenerOptions; socket: ListenSocket }> = [];
    try {
      const policyIndex = listenerPolicyIndexes(listeners);
      for (const [i, l] of listeners.entries()) {
        const options = nativeListenerOptions(l, policyIndex[i] ?? 0);
        opened.push({ options, socket: new binding.ListenSocket(options) });
      }
    } catch (err) {
      for (const o of opened) o.socket.close();
      throw err;
    }
    return new ListenSockets(opened);
  }

  /** What each worker gets: the listener's options and the socket's fd, in config order. */
  handoffs(): ListenerHandoff[] {
    return this.sockets.map((s) => ({ options: s.options, fd: s.socket.fd }));
  }

  addresses(): string[] {
    return this.sockets.map((s) => s.socket.address);
  }

  /** Idempotent. Connections still queued are reset by the kernel once no worker holds a dup. */
  close(): void {
    for (const s of this.sockets) s.socket.close();
  }
}
