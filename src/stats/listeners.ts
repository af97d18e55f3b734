// Per-listener counter names: `listener.<name>.<stat>`, like Envoy's `listener.<address>.<stat>`
// but keyed by the listener's name (unique in a config, and stable across reloads where the
// address may change). Each worker's counter block ends with listenerStatNames for every attached
// listener in attach order (cpp/core/stats.h SPLICEGATE_LISTENER_STATS); these helpers name those
// slots and read them back.

const PREFIX = 'listener.';

export function listenerCounterName(listener: string, stat: string): string {
  return `${PREFIX}${listener}.${stat}`;
}

/** The names of the slots a worker appends for these listeners (in attach order). */
export function listenerCounterNames(listeners: readonly string[], statNames: readonly string[]): string[] {
  return listeners.flatMap((listener) => statNames.map((stat) => listenerCounterName(listener, stat)));
}

/**
 * The listener and stat of a per-listener counter name, or undefined for any other name. A
 * listener name may hold "." (letters, digits, "_", "." and "-"); a stat name never does, so the
 * stat is what follows the last ".".
 */
export function parseListenerCounter(name: string): { listener: string; stat: string } | undefined {
  if (!name.startsWith(PREFIX)) return undefined;
  const dot = name.lastIndexOf('.');
  if (dot <= PREFIX.length) return undefined;
  return { listener: name.slice(PREFIX.length, dot), stat: name.slice(dot + 1) };
}
