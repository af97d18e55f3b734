// What the converter's parts share: the ORIGINAL_DST clusters a file defines, the one splicegate
// cluster their settings fold into, and what a listener's filter chain converts to.

import type { Findings, Segment } from './findings';
import { describe } from './values';

export type Obj = Record<string, unknown>;

export interface OriginalDstCluster {
  name: string;
  path: Segment[];
  useHttpHeader: boolean;
  headerName: string;
}

/** ORIGINAL_DST clusters by name. */
export type OriginalDstClusters = Map<string, OriginalDstCluster>;

/** Cluster-level splicegate settings, and where in the Envoy file each came from (for conflicts). */
export class ClusterOut {
  readonly values: Obj = {};
  private readonly from = new Map<string, string>();

  constructor(private readonly findings: Findings) {}

  set(key: string, value: unknown, path: Segment[]): void {
    const had = this.values[key];
    if (had !== undefined && JSON.stringify(had) !== JSON.stringify(value)) {
      this.findings.error(path, `conflicts with ${this.from.get(key) ?? 'another setting'} (${describe(had)}): splicegate has one cluster, so cluster.${key} takes one value`);
      return;
    }
    this.values[key] = value;
    this.from.set(key, path.map((s) => (typeof s === 'number' ? `[${s}]` : `.${s}`)).join('').replace(/^\./, ''));
  }
}

/** What a listener's terminal filter converts to: a relay (tcp_proxy) or an HTTP listener. */
export type Chain =
  | { kind: 'tcp'; idleTimeout?: { value: string; path: Segment[] } }
  | { kind: 'http'; http: Obj };

/** The ORIGINAL_DST cluster a route or tcp_proxy names; undefined (with a finding) otherwise. */
export function originalDstCluster(name: unknown, path: Segment[], clusters: OriginalDstClusters, findings: Findings): OriginalDstCluster | undefined {
  if (typeof name !== 'string') {
    findings.error(path, `expected a cluster name, got ${describe(name)}`);
    return undefined;
  }
  const c = clusters.get(name);
  if (c === undefined) findings.error(path, `cluster ${JSON.stringify(name)} is not an ORIGINAL_DST cluster of this file: traffic to it cannot be converted`);
  return c;
}
