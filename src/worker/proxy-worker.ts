// A proxy worker: one long-running piscina task per thread. It owns one NativeWorker (the C++
// epoll loop on its own native thread) that accepts on the process's listening sockets (opened
// once by the main thread, passed here by fd number), answers the supervisor's control messages,
// and resolves when told to exit.

import type { MessagePort } from 'node:worker_threads';
import { loadBinding, type NativeWorker } from '../native/binding';
import { serializeError, type PoolTask, type SupervisorToWorker, type WorkerTask, type WorkerToSupervisor } from './messages';

/** How often the worker's event buffer (deny log) is drained: one bulk call, bounded by the core. */
const EVENT_DRAIN_MS = 1000;
/**
 * How often the access log's records are drained: often enough that the core's buffer
 * (ACCESS_LOG_CAPACITY records) holds ~80,000 closes per second per worker; each drain is one
 * swap on the loop thread, the formatting runs here.
 */
export const ACCESS_LOG_DRAIN_MS = 100;

function send(port: MessagePort, message: WorkerToSupervisor): void {
  port.postMessage(message);
}

/**
 * The worker that serves UDP listeners. UDP sessions live in one worker's table; were every worker
 * on the socket, one flow's datagrams would be spread over workers (EPOLLEXCLUSIVE wakes whichever
 * is idle), each relaying from its own upstream port, which breaks every protocol that keeps state
 * per source (QUIC, iperf3, WireGuard). A restarted worker keeps its id, so it takes the socket
 * back; datagrams wait in the socket's buffer meanwhile.
 */
export const UDP_WORKER_ID = 0;

function openNativeWorker(task: WorkerTask): { worker: NativeWorker; addresses: string[] } {
  const binding = loadBinding();
  const worker = new binding.NativeWorker(task.nativeOptions);
  try {
    const listeners = task.listeners.filter((l) => l.options.protocol !== 'udp' || task.workerId === UDP_WORKER_ID);
    // A UDP listener may share its port with a TCP one: "0.0.0.0:15001/udp" tells them apart in the log.
    const addresses = listeners.map((l) => {
      const bound = worker.attachListener(l.options, l.fd);
      return l.options.protocol === 'udp' ? `${bound}/udp` : bound;
    });
    worker.start();
    return { worker, addresses };
  } catch (err) {
    worker.close();
    throw err;
  }
}

export default async function runProxyWorker(task: PoolTask): Promise<number> {
  if ('kind' in task) return 0;
  const { port } = task;
  let opened: { worker: NativeWorker; addresses: string[] };
  try {
    opened = openNativeWorker(task);
  } catch (err) {
    send(port, { type: 'failed', error: serializeError(err) });
    port.close();
    throw err;
  }
  const { worker } = opened;
  send(port, { type: 'listening', addresses: opened.addresses });
  // The main thread logs them (rate-limited); nothing is sent when there is nothing to report.
  // Each drain is a task on the loop thread: a periodic one asks first, so that a resting loop
  // (docs/ARCHITECTURE.md, "Thread model") is not woken to find nothing.
  const drain = setInterval(() => {
    if (!worker.holdsEvents()) return;
    worker.drainEvents((batch) => {
      if (batch.events.length > 0 || batch.dropped > 0) send(port, { type: 'events', events: batch.events, dropped: batch.dropped });
    });
  }, EVENT_DRAIN_MS);

  const accessLogOn = (task.nativeOptions.accessLogSample ?? 0) > 0;
  const drainAccessLog = (then?: () => void): void =>
    worker.drainAccessLog(task.workerId, (batch) => {
      if (batch.count > 0 || batch.dropped > 0) send(port, { type: 'access-log', lines: batch.lines, count: batch.count, dropped: batch.dropped });
      then?.();
    });
  const accessDrain = accessLogOn
    ? setInterval(() => {
        if (worker.holdsAccessRecords()) drainAccessLog();
      }, ACCESS_LOG_DRAIN_MS)
    : undefined;

  return new Promise<number>((resolve) => {
    port.on('message', (message: SupervisorToWorker) => {
      switch (message.type) {
        case 'stats':
          send(port, { type: 'stats', requestId: message.requestId, values: worker.stats() });
          break;
        case 'hosts':
          worker.hosts((snapshot) =>
            send(port, { type: 'hosts', requestId: message.requestId, addresses: snapshot.addresses, values: snapshot.values }),
          );
          break;
        case 'latency':
          worker.latency((snapshot) => send(port, { type: 'latency', requestId: message.requestId, export: snapshot }));
          break;
        case 'stop-accepting':
          // The loop thread leaves the listeners later; what the supervisor waits for is that this
          // worker is past attaching, so the main thread may close the sockets.
          worker.stopAccepting();
          send(port, { type: 'stopped-accepting', requestId: message.requestId });
          break;
        case 'close-all':
          worker.closeAll();
          break;
        case 'exit': {
          clearInterval(drain);
          clearInterval(accessDrain);
          const finish = (): void => {
            worker.close();
            send(port, { type: 'exited' });
            port.close();
            resolve(task.workerId);
          };
          // The last records (connections closed by the drain among them) go out before the end.
          if (accessLogOn) drainAccessLog(finish);
          else finish();
          break;
        }
        case 'crash':
          // Simulates a worker dying mid-flight: the thread ends without any cleanup of ours. The
          // addon's environment cleanup hook hands the native loop to the orphan registry: it
          // stops accepting and finishes the connections it relays, then ends and frees its fds.
          process.exit(70);
      }
    });
  });
}
