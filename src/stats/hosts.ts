// Merges the workers' host-cache snapshots by address: a destination used by two workers has an
// entry in each (the caches are per worker, lock-free), and operators want one row per host.

export interface HostView {
  address: string;
  stats: Record<string, number>;
  /** active while it has open connections; idle hosts are removed after cleanup_interval. */
  state: 'active' | 'idle';
}

export function mergeHosts(
  statNames: readonly string[],
  snapshots: ReadonlyArray<{ addresses: string[]; values: Float64Array }>,
): HostView[] {
  const merged = new Map<string, Record<string, number>>();
  for (const snapshot of snapshots) {
    snapshot.addresses.forEach((address, h) => {
      let stats = merged.get(address);
      if (!stats) {
        stats = Object.fromEntries(statNames.map((n) => [n, 0]));
        merged.set(address, stats);
      }
      const base = h * statNames.length;
      statNames.forEach((name, i) => {
        stats[name] = (stats[name] ?? 0) + (snapshot.values[base + i] ?? 0);
      });
    });
  }
  return [...merged.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([address, stats]) => ({ address, stats, state: (stats.cx_active ?? 0) > 0 ? 'active' : 'idle' }));
}

/** Envoy's /clusters text form: `original_dst::<host>::<stat>::<value>`, one line per stat. */
export function hostsText(hosts: readonly HostView[]): string {
  const lines: string[] = [];
  for (const host of hosts) {
    lines.push(`original_dst::${host.address}::state::${host.state}`);
    for (const [name, value] of Object.entries(host.stats)) lines.push(`original_dst::${host.address}::${name}::${value}`);
  }
  return lines.length ? lines.join('\n') + '\n' : '';
}
