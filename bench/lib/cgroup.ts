// CPU quota for the per-core benchmark: one cgroup v1 `cpu` group per contender, all with the same
// cpu.cfs_quota_us / cpu.cfs_period_us, in a cpu hierarchy mounted on a directory of our own (the
// proxies run under `ip netns exec`, which remounts /sys for its child, and the host's /sys/fs/cgroup
// layout is not ours to rely on). cpu.stat's nr_throttled tells whether a contender actually hit
// the quota during a measurement. Everything is undone by destroy(): processes go back to the root
// group, the groups are removed, the hierarchy is unmounted and its directory deleted.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface CpuStat {
  /** Enforcement periods that elapsed with runnable tasks in the group. */
  nrPeriods: number;
  /** Periods in which the group used up its quota and was stopped until the next one. */
  nrThrottled: number;
  /** Total time the group spent stopped, µs. */
  throttledUs: number;
}

/** Parses cgroup v1 cpu.stat ("nr_periods N\nnr_throttled N\nthrottled_time NS\n..."). */
export function parseCpuStat(text: string): CpuStat {
  const v = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^(\w+)\s+(\d+)$/.exec(line.trim());
    if (m && m[1] !== undefined && m[2] !== undefined) v.set(m[1], Number(m[2]));
  }
  const need = (k: string): number => {
    const x = v.get(k);
    if (x === undefined) throw new Error(`cpu.stat has no ${k}: ${JSON.stringify(text)}`);
    return x;
  };
  return { nrPeriods: need('nr_periods'), nrThrottled: need('nr_throttled'), throttledUs: need('throttled_time') / 1000 };
}

export function cpuStatDelta(a: CpuStat, b: CpuStat): CpuStat {
  return { nrPeriods: b.nrPeriods - a.nrPeriods, nrThrottled: b.nrThrottled - a.nrThrottled, throttledUs: b.throttledUs - a.throttledUs };
}

export class CpuCgroups {
  private readonly groups = new Set<string>();
  private destroyed = false;

  private constructor(
    /** Where our cpu hierarchy is mounted. */
    readonly mountPoint: string,
    /** Our parent group inside it (its name carries our pid, so concurrent runs do not collide). */
    readonly base: string,
    readonly quotaCores: number,
    readonly periodUs: number,
  ) {}

  /** Mounts the cpu controller's hierarchy and creates our parent group. Throws with the reason. */
  static create(quotaCores: number, periodUs = 100000): CpuCgroups {
    if (!(quotaCores > 0)) throw new Error(`CPU quota must be positive, got ${quotaCores}`);
    const quotaUs = Math.round(quotaCores * periodUs);
    if (quotaUs < 1000) throw new Error(`CPU quota ${quotaCores} x ${periodUs} µs is below the kernel's 1 ms minimum`);
    const mountPoint = fs.mkdtempSync(path.join(os.tmpdir(), 'splicegate-cpu-cgroup-'));
    const m = spawnSync('mount', ['-t', 'cgroup', '-o', 'cpu', 'splicegate-bench', mountPoint], { encoding: 'utf8' });
    if (m.status !== 0) {
      fs.rmdirSync(mountPoint);
      throw new Error(`cannot mount the cgroup v1 cpu hierarchy on ${mountPoint}: ${(m.stderr ?? '').trim() || `exit ${m.status}`} (per-core mode needs cgroup v1 with the cpu controller)`);
    }
    const base = path.join(mountPoint, `splicegate-bench-${process.pid}`);
    const g = new CpuCgroups(mountPoint, base, quotaCores, periodUs);
    try {
      fs.mkdirSync(base);
    } catch (e) {
      g.destroy();
      throw e;
    }
    // Undo everything even when the run dies or is interrupted (the lab's signal handlers exit).
    process.on('exit', () => g.destroy());
    return g;
  }

  private dir(id: string): string {
    if (!/^[a-z0-9-]+$/.test(id)) throw new Error(`bad cgroup name ${JSON.stringify(id)}`);
    return path.join(this.base, id);
  }

  /** Creates (once) the group for `id` with the common quota, and moves `pid` (all its threads) in. */
  attach(id: string, pid: number): void {
    const d = this.dir(id);
    if (!this.groups.has(id)) {
      fs.mkdirSync(d);
      this.groups.add(id);
      fs.writeFileSync(path.join(d, 'cpu.cfs_period_us'), String(this.periodUs));
      fs.writeFileSync(path.join(d, 'cpu.cfs_quota_us'), String(Math.round(this.quotaCores * this.periodUs)));
    }
    // cgroup v1: writing a PID to cgroup.procs moves its whole thread group; idempotent.
    fs.writeFileSync(path.join(d, 'cgroup.procs'), String(pid));
  }

  /** Whether `pid`'s threads are all in `id`'s group. */
  holds(id: string, pid: number): boolean {
    try {
      const threads = fs.readdirSync(`/proc/${pid}/task`).map(Number);
      const tasks = new Set(fs.readFileSync(path.join(this.dir(id), 'tasks'), 'utf8').split('\n').filter(Boolean).map(Number));
      return threads.length > 0 && threads.every((t) => tasks.has(t));
    } catch {
      return false;
    }
  }

  stat(id: string): CpuStat {
    return parseCpuStat(fs.readFileSync(path.join(this.dir(id), 'cpu.stat'), 'utf8'));
  }

  /** Moves every process back to the root group, removes the groups, unmounts. Idempotent, synchronous. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    const rootProcs = path.join(this.mountPoint, 'cgroup.procs');
    for (const id of this.groups) {
      const d = path.join(this.base, id);
      try {
        for (const pid of fs.readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
          try {
            fs.writeFileSync(rootProcs, pid);
          } catch {
            // exited meanwhile
          }
        }
        fs.rmdirSync(d);
      } catch {
        // already gone
      }
    }
    try {
      fs.rmdirSync(this.base);
    } catch {
      // already gone
    }
    spawnSync('umount', [this.mountPoint], { stdio: 'ignore' });
    try {
      fs.rmdirSync(this.mountPoint);
    } catch {
      // still mounted (busy) or gone: leave it rather than touch a mounted hierarchy
    }
  }
}
