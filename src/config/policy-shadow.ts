// Shadowed policy rules: a rule that no connection can reach, because the rules before it already
// match every (address, port) it names. First match wins, so such a rule is dead configuration
// and almost always a mistake in the order (a broad allow above a narrow deny). Exact, not a
// heuristic: earlier rules may cover a rule's space together (two /25s cover a /24; ports 1-100
// and 101-200 cover 50-150).
//
// Rules are fed in order; each is judged against what came before, then added. Per address family
// the earlier CIDRs are kept by their prefix bits ("1010..."): the ones containing a CIDR are its
// prefixes (at most 33 or 129 map lookups), the ones inside it are a contiguous run of the sorted
// keys. Each CIDR keeps the union of the ports its earlier rules named.

import { ipValue } from './cidr';
import type { Cidr, PolicyRuleConfig, PortRange } from './types';

const ALL_PORTS: readonly PortRange[] = [{ first: 1, last: 65535 }];

interface KeyState {
  /** Merged, sorted, disjoint union of the ports earlier rules named on exactly this CIDR. */
  ports: PortRange[];
  /** Which rules contributed, for the message. */
  rules: { rule: number; ports: readonly PortRange[] }[];
}

interface FamilyIndex {
  width: number;
  byKey: Map<string, KeyState>;
  sortedKeys: string[];
}

export interface ShadowedRule {
  rule: number;
  /** Earlier rules whose space overlaps it (together they cover all of it). */
  by: number[];
}

export function findShadowedRules(rules: readonly PolicyRuleConfig[]): ShadowedRule[] {
  const families: Record<4 | 6, FamilyIndex> = {
    4: { width: 32, byKey: new Map(), sortedKeys: [] },
    6: { width: 128, byKey: new Map(), sortedKeys: [] },
  };
  const out: ShadowedRule[] = [];
  rules.forEach((rule, index) => {
    const ports = rule.ports.length === 0 ? ALL_PORTS : rule.ports;
    const by = new Set<number>();
    const shadowed = rule.cidrs.every((cidr) => ports.every((range) => covered(families[cidr.family], keyOf(cidr), range, by)));
    if (shadowed && rule.cidrs.length > 0) out.push({ rule: index, by: [...by].sort((a, b) => a - b) });
    for (const cidr of rule.cidrs) add(families[cidr.family], keyOf(cidr), index, ports);
  });
  return out;
}

function keyOf(cidr: Cidr): string {
  const width = cidr.family === 4 ? 32 : 128;
  return ipValue(cidr.network, cidr.family).toString(2).padStart(width, '0').slice(0, cidr.prefix);
}

function add(index: FamilyIndex, key: string, rule: number, ports: readonly PortRange[]): void {
  let state = index.byKey.get(key);
  if (state === undefined) {
    state = { ports: [], rules: [] };
    index.byKey.set(key, state);
    index.sortedKeys.splice(lowerBound(index.sortedKeys, key), 0, key);
  }
  state.rules.push({ rule, ports });
  for (const range of ports) state.ports = mergeRange(state.ports, range);
}

/** Is key x range entirely matched by earlier rules? Adds the contributing rules to `by`. */
function covered(index: FamilyIndex, key: string, range: PortRange, by: Set<number>): boolean {
  // 1. CIDRs containing this one (or equal): each covers the whole address space here.
  const containing: KeyState[] = [];
  for (let length = 0; length <= key.length; length++) {
    const state = index.byKey.get(key.slice(0, length));
    if (state !== undefined) containing.push(state);
  }
  const gaps = subtract([range], containing.flatMap((s) => intersecting(s.ports, range)));
  if (gaps.length === 0) {
    containing.forEach((s) => credit(s, range, by));
    return true;
  }
  // 2. CIDRs inside this one: on each port segment of a gap, do the ones naming it tile the CIDR?
  const inside: { key: string; state: KeyState }[] = [];
  for (let i = lowerBound(index.sortedKeys, key); i < index.sortedKeys.length; i++) {
    const k = index.sortedKeys[i]!;
    if (!k.startsWith(key)) break;
    if (k.length > key.length) inside.push({ key: k, state: index.byKey.get(k)! });
  }
  if (inside.length === 0) return false;
  const need = 1n << BigInt(index.width - key.length);
  // Cheap bound first: if all of them together (whatever their ports) cannot tile the CIDR, no
  // port segment can be covered; this keeps "10,000 host rules, then a /0" linear.
  if (tiledSize(inside, () => true, index.width) < need) return false;
  for (const gap of gaps) {
    const cuts = new Set<number>([gap.first, gap.last + 1]);
    for (const { state } of inside) {
      for (const r of intersecting(state.ports, gap)) {
        cuts.add(Math.max(r.first, gap.first));
        cuts.add(Math.min(r.last, gap.last) + 1);
      }
    }
    const points = [...cuts].sort((a, b) => a - b);
    for (let i = 0; i + 1 < points.length; i++) {
      const segment = { first: points[i]!, last: points[i + 1]! - 1 };
      if (tiledSize(inside, (state) => intersecting(state.ports, segment).length > 0, index.width) < need) return false;
    }
  }
  containing.forEach((s) => credit(s, range, by));
  inside.forEach(({ state }) => credit(state, range, by));
  return true;
}

/** Addresses covered by the keys that pass `use` (each counted once: sub-CIDRs of a counted key are skipped). */
function tiledSize(inside: readonly { key: string; state: KeyState }[], use: (state: KeyState) => boolean, width: number): bigint {
  let sum = 0n;
  let outer: string | undefined; // keys are sorted: a key's sub-CIDRs follow it
  for (const { key, state } of inside) {
    if (outer !== undefined && key.startsWith(outer)) continue;
    if (!use(state)) continue;
    outer = key;
    sum += 1n << BigInt(width - key.length);
  }
  return sum;
}

function credit(state: KeyState, range: PortRange, by: Set<number>): void {
  for (const { rule, ports } of state.rules) {
    if (ports.some((p) => p.first <= range.last && p.last >= range.first)) by.add(rule);
  }
}

/** The ranges of a sorted disjoint list that overlap `range` (binary search, then a short scan). */
function intersecting(list: readonly PortRange[], range: PortRange): PortRange[] {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid]!.last < range.first) lo = mid + 1;
    else hi = mid;
  }
  const out: PortRange[] = [];
  for (let i = lo; i < list.length && list[i]!.first <= range.last; i++) out.push(list[i]!);
  return out;
}

/** `from` minus the union of `remove` (both lists of ranges; result sorted, disjoint). */
function subtract(from: readonly PortRange[], remove: readonly PortRange[]): PortRange[] {
  let merged: PortRange[] = [];
  for (const r of remove) merged = mergeRange(merged, r);
  const out: PortRange[] = [];
  for (const f of from) {
    let start = f.first;
    for (const r of merged) {
      if (r.last < start || r.first > f.last) continue;
      if (r.first > start) out.push({ first: start, last: r.first - 1 });
      start = Math.max(start, r.last + 1);
    }
    if (start <= f.last) out.push({ first: start, last: f.last });
  }
  return out;
}

/** Insert a range into a sorted disjoint list, merging overlapping and adjacent ranges. */
function mergeRange(list: readonly PortRange[], range: PortRange): PortRange[] {
  const out: PortRange[] = [];
  let first = range.first;
  let last = range.last;
  let placed = false;
  for (const r of list) {
    if (r.last + 1 < first) out.push(r);
    else if (r.first > last + 1) {
      if (!placed) {
        out.push({ first, last });
        placed = true;
      }
      out.push(r);
    } else {
      first = Math.min(first, r.first);
      last = Math.max(last, r.last);
    }
  }
  if (!placed) out.push({ first, last });
  return out;
}

function lowerBound(sorted: readonly string[], key: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
