// /proc readers: CPU time of one process, machine-wide and per-CPU busy time, RSS, and the CPU
// used meanwhile by unrelated processes (other users of this machine), so a noisy run is visible.

import * as fs from 'node:fs';

/** USER_HZ: the unit of /proc/<pid>/stat and /proc/stat times (100 on every Linux build we run on). */
export const CLK_TCK = 100;

function readText(path: string): string | null {
  try {
    return fs.readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/** Fields of /proc/<pid>/stat after the "(comm)" part; index 0 is field 3 (state). */
function statFields(pid: number): string[] | null {
  const t = readText(`/proc/${pid}/stat`);
  if (t === null) return null;
  const close = t.lastIndexOf(')');
  if (close < 0) return null;
  return t
    .slice(close + 2)
    .trim()
    .split(/\s+/);
}

/** utime+stime of a process (all its threads), in seconds; null if it is gone. */
export function processCpuSeconds(pid: number): number | null {
  const f = statFields(pid);
  if (!f) return null;
  // field 14 utime, 15 stime -> indexes 11, 12 after dropping pid and comm
  const u = Number(f[11]);
  const s = Number(f[12]);
  if (!Number.isFinite(u) || !Number.isFinite(s)) return null;
  return (u + s) / CLK_TCK;
}

/** VmRSS of a process in bytes; null if it is gone. */
export function processRssBytes(pid: number): number | null {
  const t = readText(`/proc/${pid}/status`);
  if (t === null) return null;
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(t);
  return m ? Number(m[1]) * 1024 : null;
}

export interface CpuTimes {
  /** Busy (user, nice, system, irq, softirq), stolen by the hypervisor, and total jiffies. */
  busy: number;
  steal: number;
  total: number;
  perCpu: Array<{ busy: number; total: number }>;
}

export function readCpuTimes(): CpuTimes {
  const t = readText('/proc/stat') ?? '';
  const out: CpuTimes = { busy: 0, steal: 0, total: 0, perCpu: [] };
  for (const line of t.split('\n')) {
    const m = /^cpu(\d*)\s+(.*)$/.exec(line);
    if (!m) continue;
    const v = (m[2] ?? '').trim().split(/\s+/).map(Number);
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user
    const total = v.slice(0, 8).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const steal = v[7] ?? 0;
    const busy = total - idle - steal;
    if (m[1] === '') {
      out.busy = busy;
      out.steal = steal;
      out.total = total;
    } else {
      out.perCpu[Number(m[1])] = { busy, total };
    }
  }
  return out;
}

export interface CpuDelta {
  /** Machine-wide busy CPU-seconds, and CPU-seconds the hypervisor gave to someone else. */
  busySeconds: number;
  stealSeconds: number;
  /** Per-CPU busy fraction (0..1) over the interval. */
  perCpuUtil: number[];
}

export function cpuDelta(a: CpuTimes, b: CpuTimes): CpuDelta {
  const perCpuUtil = b.perCpu.map((c, i) => {
    const p = a.perCpu[i];
    if (!p) return 0;
    const dt = c.total - p.total;
    return dt > 0 ? (c.busy - p.busy) / dt : 0;
  });
  return { busySeconds: (b.busy - a.busy) / CLK_TCK, stealSeconds: (b.steal - a.steal) / CLK_TCK, perCpuUtil };
}

/** The inode of a network namespace handle (/run/netns/NAME or /proc/PID/ns/net). */
export function netnsInode(path: string): number | null {
  try {
    return fs.statSync(path).ino;
  } catch {
    return null;
  }
}

/**
 * CPU seconds used so far by each user-space process that is neither ours (in one of `ownNetns`,
 * or this process) nor a kernel thread, by PID. foreignCpuDelta() of two samples shows how much of
 * the machine someone else took meanwhile (processes that exit inside the window are missed).
 */
export function foreignCpuSample(ownNetns: ReadonlySet<number>): Map<number, number> {
  const out = new Map<number, number>();
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    const f = statFields(pid);
    if (!f) continue;
    const ppid = Number(f[1]);
    if (pid === 2 || ppid === 2) continue; // kernel threads
    const ino = netnsInode(`/proc/${pid}/ns/net`);
    if (ino !== null && ownNetns.has(ino)) continue;
    const u = Number(f[11]);
    const s = Number(f[12]);
    if (Number.isFinite(u) && Number.isFinite(s)) out.set(pid, (u + s) / CLK_TCK);
  }
  return out;
}

export function foreignCpuDelta(a: Map<number, number>, b: Map<number, number>): number {
  let sum = 0;
  for (const [pid, cpu] of b) sum += Math.max(0, cpu - (a.get(pid) ?? 0));
  return sum;
}
