// Readers for the syscall / wakeup measurement (bench/syscalls.ts): `strace -c` summary tables and
// per-thread context-switch counters from /proc.

import * as fs from 'node:fs';

export interface StraceRow {
  syscall: string;
  calls: number;
  errors: number;
}

/**
 * Parses the table `strace -c` writes:
 *   % time     seconds  usecs/call     calls    errors syscall
 *   ------ ----------- ----------- --------- --------- ----------------
 *    52.10    0.001234           3       400       120 recvfrom
 *   ...
 *   100.00    0.002368           2       900       120 total
 * The errors column is blank when a syscall never failed. The "total" row is recomputed from the
 * syscall rows (its layout differs between strace versions).
 */
export function parseStraceSummary(text: string): StraceRow[] {
  const rows: StraceRow[] = [];
  let sawTotal = false;
  for (const line of text.split('\n')) {
    const t = line.trim().split(/\s+/);
    if (t.length < 4 || !/^\d+\.\d+$/.test(t[0] ?? '') || !/^\d+\.\d+$/.test(t[1] ?? '')) continue;
    const syscall = t[t.length - 1] ?? '';
    if (syscall === 'total') {
      sawTotal = true;
      continue;
    }
    // After the seconds column: usecs/call, calls, and errors when there were any.
    const nums = t.slice(2, -1).map(Number);
    if (!/^[a-z_0-9]+$/.test(syscall) || nums.length < 2 || nums.some((n) => !Number.isInteger(n))) continue;
    rows.push({ syscall, calls: nums[1] ?? 0, errors: nums[2] ?? 0 });
  }
  if (!sawTotal) throw new Error(`no strace -c summary in:\n${text.slice(0, 2000)}`);
  rows.push({ syscall: 'total', calls: rows.reduce((a, r) => a + r.calls, 0), errors: rows.reduce((a, r) => a + r.errors, 0) });
  return rows;
}

export interface ThreadSwitches {
  tid: number;
  name: string;
  voluntary: number;
  involuntary: number;
}

/** Context switches so far of every thread of `pid` (threads that exit meanwhile are skipped). */
export function threadSwitches(pid: number): ThreadSwitches[] {
  const out: ThreadSwitches[] = [];
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tids) {
    try {
      const s = fs.readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8');
      const v = /^voluntary_ctxt_switches:\s*(\d+)/m.exec(s);
      const nv = /^nonvoluntary_ctxt_switches:\s*(\d+)/m.exec(s);
      const name = /^Name:\s*(.*)$/m.exec(s)?.[1]?.trim() ?? '?';
      out.push({ tid: Number(t), name, voluntary: Number(v?.[1] ?? 0), involuntary: Number(nv?.[1] ?? 0) });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** utime and stime of a process (all threads), seconds; null if it is gone. */
export function processUserSystem(pid: number): { user: number; system: number } | null {
  try {
    const t = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = t.slice(t.lastIndexOf(')') + 2).trim().split(/\s+/);
    // fields 14 utime and 15 stime, counted from 1 with pid and comm as 1 and 2
    const u = Number(f[11]);
    const s = Number(f[12]);
    return Number.isFinite(u) && Number.isFinite(s) ? { user: u / 100, system: s / 100 } : null;
  } catch {
    return null;
  }
}
