// Where the CPU of a proxy goes, from `perf record -e cpu-clock -g -C <proxy cpu>` samples as
// `perf script` prints them (bench/profile.ts). Pure: text in, buckets out, no I/O.
//
// Every sample lands in exactly one bucket of each of these three views:
//   1. who: the proxy process (its pid set) or another task on that CPU (ksoftirqd, kworker,
//      idle, other processes);
//   2. for the proxy, where: user space by the DSO of the sampled instruction (own code, libc,
//      node/V8/JIT, other libraries), or the kernel by the OUTERMOST meaningful frame (which
//      syscall; a page fault; an interrupt that arrived in user space; other kernel work);
//   3. for the proxy's kernel samples, what inside: the INNERMOST marker frame on the stack
//      (softirq RX run inline, RPS IPIs, netfilter, scheduler, wake-ups, interrupts, page faults),
//      else the context's own work (TCP/IP, copies, epoll). Innermost wins so that the markers are
//      disjoint cost centres: netfilter run inside softirq RX counts as netfilter, the IPI sent at
//      the end of a softirq RX batch counts as RPS IPI, not as RX.
// Weights are the sample periods perf recorded (ns of CPU for cpu-clock), so a change of -F or a
// throttled sampler does not skew the sums.

/** One stack frame of a sample, as perf script prints it. */
export interface Frame {
  ip: bigint;
  sym: string;
  dso: string;
}

export interface Sample {
  comm: string;
  pid: number;
  tid: number;
  /** The sample's weight: perf's period (ns for cpu-clock). */
  period: number;
  /** Leaf first (the sampled instruction), outermost last. */
  frames: Frame[];
}

/** Parses `perf script -F comm,pid,tid,cpu,time,period,event,ip,sym,dso` output (with callchains). */
export function parsePerfScript(text: string): Sample[] {
  const out: Sample[] = [];
  let cur: Sample | null = null;
  // "haproxy 29310/29310 [001] 33650.002542:    1001001 cpu-clock: " (comm may contain spaces).
  const header = /^(.*?)\s+(\d+)\/(\d+)\s+\[\d+\]\s+[\d.]+:\s+(\d+)\s+\S+:\s*$/;
  // "	ffffffff82087915 __tcp_send_ack ([kernel.kallsyms])"; C++ symbols carry parentheses, the
  // DSO (a path or [name]) is the last parenthesised group.
  const frame = /^\s+([0-9a-f]+)\s+(.*)\s+\((.*)\)$/;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/ \(deleted\)\)$/, ')');
    if (line.trim() === '') {
      if (cur) out.push(cur);
      cur = null;
      continue;
    }
    if (cur && /^\s/.test(line)) {
      const m = frame.exec(line);
      if (m && m[1] !== undefined && m[2] !== undefined && m[3] !== undefined) cur.frames.push({ ip: BigInt(`0x${m[1]}`), sym: m[2], dso: m[3] });
      continue;
    }
    const h = header.exec(line);
    if (h && h[1] !== undefined && h[2] !== undefined && h[3] !== undefined && h[4] !== undefined) {
      if (cur) out.push(cur);
      cur = { comm: h[1].trim(), pid: Number(h[2]), tid: Number(h[3]), period: Number(h[4]), frames: [] };
    }
  }
  if (cur) out.push(cur);
  return out;
}

/** Syscall groups reported separately; anything else is `other`. */
export const SYSCALL_GROUPS = {
  send: ['sendto', 'send', 'sendmsg', 'sendmmsg', 'write', 'writev'],
  recv: ['recvfrom', 'recv', 'recvmsg', 'recvmmsg', 'read', 'readv'],
  epoll_wait: ['epoll_wait', 'epoll_pwait', 'epoll_pwait2'],
  epoll_ctl: ['epoll_ctl'],
  splice: ['splice'],
  io_uring_enter: ['io_uring_enter'],
  accept: ['accept4', 'accept'],
  connect: ['connect'],
  close: ['close', 'shutdown'],
  sockopt: ['setsockopt', 'getsockopt'],
} as const;
export type SyscallGroup = keyof typeof SYSCALL_GROUPS | 'other';

export type UserBucket = 'own' | 'libc' | 'runtime' | 'other';
export type KernelContext = `syscall:${SyscallGroup}` | 'page_fault' | 'interrupt' | 'other';
/** Inside a kernel sample: the innermost marker, or `rest` (the context's own work). */
export type KernelPart = 'rps_ipi' | 'netfilter' | 'softirq_rx' | 'scheduler' | 'wake_up' | 'page_fault' | 'ipi_rx' | 'irq' | 'rest';
export type OtherTask = 'ksoftirqd' | 'kworker' | 'idle' | 'other';

export const KERNEL_PARTS: readonly KernelPart[] = ['softirq_rx', 'rps_ipi', 'ipi_rx', 'netfilter', 'scheduler', 'wake_up', 'irq', 'page_fault', 'rest'];

// Innermost wins: checked leaf to outermost, the first frame matching any marker decides. Within
// one frame the first matching marker of this list wins (only the IPI entry matches two: it is
// ipi_rx, not irq). ipi_rx is what is left of a received function-call IPI (in this lab: the RPS
// kick from the load CPU) once the softirq RX work it starts is counted as softirq_rx: interrupt
// entry and exit, and in a VM the exits that delivering and acknowledging it cost.
const PART_MARKERS: ReadonlyArray<[KernelPart, RegExp]> = [
  ['rps_ipi', /^net_rps_send_ipi$/],
  ['netfilter', /^(nf_hook_slow|ipt_do_table|nf_conntrack_in|nf_nat_inet_fn|nf_nat_ipv4_\w+)$/],
  ['softirq_rx', /^net_rx_action$/],
  ['scheduler', /^(__schedule|schedule|finish_task_switch(\.isra\.\d+)?)$/],
  ['wake_up', /^try_to_wake_up$/],
  ['page_fault', /^(asm_)?exc_page_fault$/],
  ['ipi_rx', /^(asm_)?sysvec_call_function(_single)?$/],
  ['irq', /^(asm_sysvec_\w+|asm_common_interrupt|sysvec_\w+|common_interrupt)$/],
];

const SYS_FRAME = /^__(?:x64|ia32|do|se)_sys_(\w+)$/;
const SYSCALL_ENTRY = /^(do_syscall_64|entry_SYSCALL_64\w*)$/;
const INTERRUPT_ENTRY = /^(asm_sysvec_\w+|asm_common_interrupt|sysvec_\w+|common_interrupt|irq_exit_rcu|__irq_exit_rcu|handle_softirqs|__do_softirq)$/;
const PAGE_FAULT_ENTRY = /^(asm_)?exc_page_fault$/;

/** x86-64 kernel addresses are in the upper half. */
function isKernel(f: Frame): boolean {
  return f.ip >= 0xffff800000000000n || f.dso === '[kernel.kallsyms]';
}

const LIBC = /(^|\/)(libc|libm|libpthread|libdl|librt|libstdc\+\+|libgcc_s|ld-linux[^/]*)[.-][^/]*$/;

/** What the proxy's own code is: DSOs matching `own` (its executable, or a native addon). */
export interface ProxyIdentity {
  /** Every pid (thread group) of the proxy. */
  pids: ReadonlySet<number>;
  /** DSOs that are the proxy's own code (haproxy: its binary; splicegate: splicegate.node). */
  own: RegExp;
  /** DSOs of a language runtime (node: its binary); JIT code has no DSO and lands here too. */
  runtime: RegExp;
}

export function userBucket(dso: string, who: ProxyIdentity): UserBucket {
  if (who.own.test(dso)) return 'own';
  if (dso === '[vdso]' || LIBC.test(dso)) return 'libc';
  if (who.runtime.test(dso) || dso === '[unknown]' || /^\/tmp\/perf-\d+\.map$/.test(dso) || /^(\[anon|memfd:|\/\/anon)/.test(dso)) return 'runtime';
  return 'other';
}

/** The syscall's name from the libc wrapper the user stack shows ("__libc_recv", "epoll_wait"). */
function syscallFromUser(frames: Frame[]): string | null {
  const u = frames.find((f) => !isKernel(f) && f.sym !== '[unknown]');
  if (!u) return null;
  const name = u.sym
    .replace(/@.*$/, '')
    .replace(/^(__GI_)?(__libc_|__)?/, '')
    .replace(/_nocancel$/, '')
    .replace(/^vdso_/, '');
  return name || null;
}

export function syscallGroup(name: string): SyscallGroup {
  for (const [g, names] of Object.entries(SYSCALL_GROUPS) as Array<[keyof typeof SYSCALL_GROUPS, readonly string[]]>) {
    if (names.includes(name)) return g;
  }
  return 'other';
}

export type Classified =
  | { who: 'proxy'; space: 'user'; bucket: UserBucket }
  | { who: 'proxy'; space: 'kernel'; context: KernelContext; syscall: string | null; part: KernelPart }
  | { who: OtherTask };

export function classify(s: Sample, who: ProxyIdentity): Classified {
  if (!who.pids.has(s.pid)) {
    if (s.pid === 0) return { who: 'idle' };
    if (/^ksoftirqd\//.test(s.comm)) return { who: 'ksoftirqd' };
    if (/^kworker\//.test(s.comm)) return { who: 'kworker' };
    return { who: 'other' };
  }
  const leaf = s.frames[0];
  if (leaf !== undefined && !isKernel(leaf)) return { who: 'proxy', space: 'user', bucket: userBucket(leaf.dso, who) };
  // No stack at all (rare: a sample perf could not unwind) counts as kernel, other.
  const k = s.frames.filter(isKernel);
  let part: KernelPart = 'rest';
  for (const f of k) {
    const hit = PART_MARKERS.find(([, re]) => re.test(f.sym));
    if (hit) {
      part = hit[0];
      break;
    }
  }
  // Outermost meaningful frame: walk from the outermost kernel frame toward the leaf.
  const outward = [...k].reverse();
  if (outward.some((f) => SYSCALL_ENTRY.test(f.sym) || SYS_FRAME.test(f.sym))) {
    let name: string | null = null;
    for (const f of outward) {
      const m = SYS_FRAME.exec(f.sym);
      if (m && m[1] !== undefined) {
        name = m[1];
        break;
      }
    }
    name ??= syscallFromUser(s.frames);
    return { who: 'proxy', space: 'kernel', context: `syscall:${name === null ? 'other' : syscallGroup(name)}`, syscall: name, part };
  }
  const outer = outward.find((f) => PAGE_FAULT_ENTRY.test(f.sym) || INTERRUPT_ENTRY.test(f.sym));
  const context: KernelContext = outer === undefined ? 'other' : PAGE_FAULT_ENTRY.test(outer.sym) ? 'page_fault' : 'interrupt';
  return { who: 'proxy', space: 'kernel', context, syscall: null, part };
}

/** Sums of sample periods (ns) per bucket; `samples` counts samples. */
export interface Attribution {
  samples: number;
  /** Everything sampled on the CPU. */
  totalNs: number;
  proxyNs: number;
  user: Record<UserBucket, number>;
  /** Kernel time of the proxy by context (outermost frame). */
  kernel: Record<string, number>;
  /** Kernel time of the proxy by part (innermost marker), over all contexts. */
  parts: Record<KernelPart, number>;
  /** context -> part -> ns, for the sub-shares of each syscall. */
  matrix: Record<string, Record<string, number>>;
  /** Syscall name -> ns (names inside `syscall:other` included). */
  syscalls: Record<string, number>;
  /** Proxy time per thread: tid -> its name (comm) and ns (a node process names all its threads "node"). */
  threads: Record<string, { comm: string; ns: number }>;
  others: Record<OtherTask, number>;
  /** Other tasks by comm (with digits folded: "kworker/1:2" -> "kworker/N:N"). */
  otherComms: Record<string, number>;
}

function add(r: Record<string, number>, k: string, v: number): void {
  r[k] = (r[k] ?? 0) + v;
}

export function attribute(samples: readonly Sample[], who: ProxyIdentity): Attribution {
  const a: Attribution = {
    samples: 0,
    totalNs: 0,
    proxyNs: 0,
    user: { own: 0, libc: 0, runtime: 0, other: 0 },
    kernel: {},
    parts: { softirq_rx: 0, rps_ipi: 0, ipi_rx: 0, netfilter: 0, scheduler: 0, wake_up: 0, irq: 0, page_fault: 0, rest: 0 },
    matrix: {},
    syscalls: {},
    threads: {},
    others: { ksoftirqd: 0, kworker: 0, idle: 0, other: 0 },
    otherComms: {},
  };
  for (const s of samples) {
    const ns = s.period;
    a.samples += 1;
    a.totalNs += ns;
    const c = classify(s, who);
    if (c.who !== 'proxy') {
      a.others[c.who] += ns;
      add(a.otherComms, s.comm.replace(/\d+/g, 'N'), ns);
      continue;
    }
    a.proxyNs += ns;
    const t = (a.threads[String(s.tid)] ??= { comm: s.comm, ns: 0 });
    t.ns += ns;
    if (c.space === 'user') {
      a.user[c.bucket] += ns;
      continue;
    }
    add(a.kernel, c.context, ns);
    a.parts[c.part] += ns;
    const row = (a.matrix[c.context] ??= {});
    add(row, c.part, ns);
    if (c.syscall !== null) add(a.syscalls, c.syscall, ns);
  }
  return a;
}

/** Nanoseconds of CPU to microseconds per request. */
export function usPerRequest(ns: number, requests: number): number {
  return requests > 0 ? ns / 1000 / requests : Number.NaN;
}
