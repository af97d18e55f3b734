// The validated policies in the compact form the addon copies once into CoreOptions::policies:
// flat typed arrays instead of thousands of small objects, so copying 10,000 rules into each
// worker is a few array reads rather than a walk over a JS object graph.

import type { NativePolicyOptions } from '../native/binding';
import { ipValue } from './cidr';
import type { ListenerConfig, PolicyConfig, SplicegateConfig } from './types';

export const CIDR_WORDS = 7;
export const PORT_WORDS = 3;

export function nativePolicy(policy: PolicyConfig): NativePolicyOptions {
  const cidrCount = policy.rules.reduce((n, r) => n + r.cidrs.length, 0);
  const portCount = policy.rules.reduce((n, r) => n + r.ports.length, 0);
  const cidrs = new Uint32Array(cidrCount * CIDR_WORDS);
  const ports = new Uint32Array(portCount * PORT_WORDS);
  let c = 0;
  let p = 0;
  policy.rules.forEach((rule, index) => {
    for (const cidr of rule.cidrs) {
      // IPv4 sits in the first word, as its bytes sit first in the core's IpCidr.
      const value = cidr.family === 4 ? ipValue(cidr.network, 4) << 96n : ipValue(cidr.network, 6);
      cidrs.set([index, cidr.family, cidr.prefix], c);
      for (let w = 0; w < 4; w++) cidrs[c + 3 + w] = Number((value >> BigInt(96 - 32 * w)) & 0xffffffffn);
      c += CIDR_WORDS;
    }
    for (const range of rule.ports) {
      ports.set([index, range.first, range.last], p);
      p += PORT_WORDS;
    }
  });
  return {
    defaultAction: policy.defaultAction,
    denySpecial: policy.denySpecial,
    ruleNames: policy.rules.map((r) => r.name),
    ruleActions: Uint8Array.from(policy.rules, (r) => (r.action === 'allow' ? 1 : 0)),
    cidrs,
    ports,
  };
}

/**
 * Index into the native policies for each listener (config.listeners, in order): 0 (the top-level
 * policy) unless the listener has its own, which then follow the top-level one in listener order.
 */
export function listenerPolicyIndexes(listeners: readonly Pick<ListenerConfig, 'policy'>[]): number[] {
  let next = 1;
  return listeners.map((listener) => (listener.policy === null ? 0 : next++));
}

/**
 * Every policy a worker needs: [0] is the top-level one, then one per listener that has its own.
 * listenerPolicy[i] is the index for config.listeners[i] (NativeListenerOptions.policy).
 */
export function nativePolicies(config: SplicegateConfig): { policies: NativePolicyOptions[]; listenerPolicy: number[] } {
  const policies = [nativePolicy(config.policy)];
  for (const listener of config.listeners) {
    if (listener.policy !== null) policies.push(nativePolicy(listener.policy));
  }
  return { policies, listenerPolicy: listenerPolicyIndexes(config.listeners) };
}
