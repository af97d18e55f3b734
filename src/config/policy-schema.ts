// The `policy:` section (top level, and per listener where it replaces the top-level one): its zod
// schema, the checks across rules (unique names, shadowed rules), and the typed form. The YAML
// names (default, rules, name, action, cidrs, ports, deny_special) are a contract.

import { z } from 'zod';
import { parseCidr, parsePortSpec } from './cidr';
import { showValue } from './parsed';
import { findShadowedRules } from './policy-shadow';
import type { Cidr, PolicyConfig, PolicyRuleConfig, PortRange } from './types';

/** Bounds the compiled tables and validation time; docs/POLICY.md has the measured costs. */
export const MAX_POLICY_RULES = 100_000;
/** Rule names become counter names (policy.<name>.denied): no characters that need quoting. */
export const RULE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** policy.special.denied counts the built-in denies. */
const RESERVED_RULE_NAME = 'special';

const cidr = z
  .string({ error: (issue) => `expected a CIDR string like "10.0.0.0/8", got ${showValue(issue.input)}` })
  .transform((text, ctx) => {
    const parsed = parseCidr(text);
    if (parsed.ok) return parsed.value;
    ctx.addIssue({ code: 'custom', message: parsed.message, input: text });
    return z.NEVER;
  });

const portMessage = (input: unknown): string => `expected a port "N" or a range "A-B" with 1 <= A <= B <= 65535, got ${showValue(input)}`;
const portSpec = z
  .union([z.string(), z.number()], { error: (issue) => portMessage(issue.input) })
  .transform((value, ctx) => {
    const parsed = parsePortSpec(value);
    if (parsed.ok) return parsed.value;
    ctx.addIssue({ code: 'custom', message: parsed.message, input: value });
    return z.NEVER;
  });

const rule = z.strictObject({
  name: z.string().regex(RULE_NAME_RE, {
    error: (issue) =>
      `expected a rule name of letters, digits, "_", "." or "-" (at most 64, starting with a letter or digit), got ${showValue(issue.input)}`,
  }),
  action: z.enum(['allow', 'deny']),
  cidrs: z.array(cidr).min(1, { error: 'list at least one CIDR (0.0.0.0/0 and ::/0 for every address)' }),
  ports: z.array(portSpec).default([]),
});

// Runs even when some rule has other problems, so one pass reports everything; the value may then
// be partly unparsed, hence `unknown` and the defensive checks.
function checkRules(policy: unknown, ctx: z.RefinementCtx): void {
  if (!isRecord(policy) || !Array.isArray(policy['rules'])) return;
  const rules: unknown[] = policy['rules'];
  const names = new Map<string, number>();
  rules.forEach((item, index) => {
    if (!isRecord(item) || typeof item['name'] !== 'string') return;
    const name = item['name'];
    if (name === RESERVED_RULE_NAME) {
      ctx.addIssue({ code: 'custom', path: ['rules', index, 'name'], message: `"${RESERVED_RULE_NAME}" is reserved (policy.special.denied counts the built-in denies)` });
    }
    const first = names.get(name);
    if (first === undefined) names.set(name, index);
    else ctx.addIssue({ code: 'custom', path: ['rules', index, 'name'], message: `duplicate rule name ${showValue(name)} (also used by rules[${first}])` });
  });
  // Shadowing needs every rule parsed; with other problems present it waits for the next run.
  if (!rules.every(isParsedRule)) return;
  for (const { rule: index, by } of findShadowedRules(rules)) {
    const shown = by.slice(0, 3).map((i) => `rules[${i}] ${showValue(rules[i]!.name)}`).join(', ');
    const more = by.length > 3 ? ` and ${by.length - 3} more` : '';
    ctx.addIssue({
      code: 'custom',
      path: ['rules', index],
      message: `rule ${showValue(rules[index]!.name)} can never match: every destination and port it names is matched first by ${shown}${more} (first match wins; move it up or remove it)`,
    });
  }
}

const always = { when: () => true };

export const policySchema = z
  .strictObject({
    default: z.enum(['allow', 'deny']).default('allow'),
    rules: z.array(rule).max(MAX_POLICY_RULES, { error: `at most ${MAX_POLICY_RULES} rules` }).default([]),
    deny_special: z.boolean().default(true),
  })
  .superRefine(checkRules, always);

export type PolicyFile = z.output<typeof policySchema>;

export function toPolicyConfig(file: PolicyFile): PolicyConfig {
  return {
    defaultAction: file.default,
    rules: file.rules.map((r) => ({ name: r.name, action: r.action, cidrs: r.cidrs, ports: r.ports })),
    denySpecial: file.deny_special,
  };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCidr(value: unknown): value is Cidr {
  return isRecord(value) && (value['family'] === 4 || value['family'] === 6) && typeof value['network'] === 'string' && typeof value['prefix'] === 'number';
}

function isPortRange(value: unknown): value is PortRange {
  return isRecord(value) && typeof value['first'] === 'number' && typeof value['last'] === 'number';
}

function isParsedRule(value: unknown): value is PolicyRuleConfig {
  return (
    isRecord(value) &&
    typeof value['name'] === 'string' &&
    (value['action'] === 'allow' || value['action'] === 'deny') &&
    Array.isArray(value['cidrs']) &&
    value['cidrs'].every(isCidr) &&
    Array.isArray(value['ports']) &&
    value['ports'].every(isPortRange)
  );
}
