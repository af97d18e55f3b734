// Destination policy config: the `policy:` contract parses to exact typed values, every mistake is
// reported at its path (bad CIDRs, ports, names, shadowed rules), and the compact native form is
// exactly what the addon decodes (cpp/test/policy_tests.cc checks the same words from the C++ side).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfigText } from '../src/config/load';
import { problemAt, problemsOf } from './config-problems';
import { listenerPolicyIndexes, nativePolicies, nativePolicy } from '../src/config/policy-native';
import { prometheusText } from '../src/stats/prometheus';
import { loadBinding } from '../src/native/binding';
import { validateConfigValue } from '../src/config/schema';
import { findShadowedRules } from '../src/config/policy-shadow';
import type { Cidr, PolicyRuleConfig, PortRange } from '../src/config/types';

const LISTENER = 'listeners:\n  - name: egress\n    address: "0.0.0.0:15001"\n';

/** A config whose top-level policy has these rules (YAML flow mappings, one per line). */
function withRules(...rules: string[]): string {
  return `${LISTENER}policy:\n  rules:\n${rules.map((r) => `    - ${r}\n`).join('')}`;
}

test('the issue example parses to exact typed values; a listener policy replaces the top-level one', () => {
  const config = parseConfigText(
    `${LISTENER}  - name: internal\n    address: "0.0.0.0:15002"\n    policy: { default: deny, rules: [{ name: db, action: allow, cidrs: ["10.0.5.0/24"] }] }\n` +
      'policy:\n  default: allow\n  rules:\n' +
      '    - { name: no-db, action: deny, cidrs: ["10.0.5.0/24"], ports: ["5432", "6379-6380"] }\n' +
      '    - { name: web, action: allow, cidrs: ["0.0.0.0/0", "::/0"], ports: ["80", 443] }\n' +
      '  deny_special: true\n',
    't',
  );
  assert.deepEqual(config.policy.rules[0], {
    name: 'no-db',
    action: 'deny',
    cidrs: [{ family: 4, network: '10.0.5.0', prefix: 24, text: '10.0.5.0/24' }],
    ports: [{ first: 5432, last: 5432 }, { first: 6379, last: 6380 }],
  });
  assert.deepEqual(config.policy.rules[1]?.ports, [{ first: 80, last: 80 }, { first: 443, last: 443 }]);
  assert.equal(config.policy.denySpecial, true);
  assert.equal(config.listeners[0]?.policy, null);
  assert.deepEqual(config.listeners[1]?.policy, {
    defaultAction: 'deny',
    denySpecial: true,
    rules: [{ name: 'db', action: 'allow', cidrs: [{ family: 4, network: '10.0.5.0', prefix: 24, text: '10.0.5.0/24' }], ports: [] }],
  });
});

test('CIDRs: canonical forms; a bare address is a host route', () => {
  const config = parseConfigText(withRules('{ name: a, action: deny, cidrs: ["2001:DB8:0:0::/64", "192.0.2.7", "fd00:ec2::254"] }'), 't');
  assert.deepEqual(
    config.policy.rules[0]?.cidrs.map((c) => c.text),
    ['2001:db8::/64', '192.0.2.7/32', 'fd00:ec2::254/128'],
  );
});

test('bad CIDRs are reported at their paths, host bits included, with the fix in the message', () => {
  const problems = problemsOf(
    withRules(
      '{ name: a, action: deny, cidrs: ["10.0.5.0/24", "10.0.5.1/24", "10.0.0.0/33", "db.internal/8", "fe80::1%eth0", 10] }',
      '{ name: b, action: deny, cidrs: ["::ffff:10.0.0.0/104", "64:ff9b::a9fe:a9fe", "2002:a00::/24"] }',
      '{ name: c, action: deny, cidrs: [] }',
    ),
  );
  problemAt(problems, 'policy.rules[0].cidrs[1]', 'bits set below its /24 prefix', '"10.0.5.0/24"', '"10.0.5.1/32"');
  problemAt(problems, 'policy.rules[0].cidrs[2]', 'prefix length must be 0..32');
  problemAt(problems, 'policy.rules[0].cidrs[3]', 'hostnames are not allowed');
  problemAt(problems, 'policy.rules[0].cidrs[4]', 'zone ids are not allowed');
  problemAt(problems, 'policy.rules[0].cidrs[5]', 'expected a CIDR string');
  problemAt(problems, 'policy.rules[1].cidrs[0]', 'IPv4-mapped', '"10.0.0.0/8"');
  problemAt(problems, 'policy.rules[1].cidrs[1]', 'NAT64', '"169.254.169.254/32"');
  problemAt(problems, 'policy.rules[1].cidrs[2]', '6to4', '"10.0.0.0/8"');
  problemAt(problems, 'policy.rules[2].cidrs', 'at least one CIDR');
  assert.equal(problems.some((p) => p.path === 'policy.rules[0].cidrs[0]'), false, 'a good CIDR is not a problem');
});

test('bad ports and port ranges are reported at their paths; integers are accepted', () => {
  const problems = problemsOf(withRules('{ name: a, action: deny, cidrs: ["10.0.0.0/8"], ports: ["0", "70000", "10-5", "http", "80-", 443, "1-65535"] }'));
  problemAt(problems, 'policy.rules[0].ports[0]', '1 <= A <= B <= 65535', '"0"');
  problemAt(problems, 'policy.rules[0].ports[1]', '"70000"');
  problemAt(problems, 'policy.rules[0].ports[2]', '"10-5"');
  problemAt(problems, 'policy.rules[0].ports[3]', '"http"');
  problemAt(problems, 'policy.rules[0].ports[4]', '"80-"');
  assert.deepEqual(
    problems.filter((p) => p.path.startsWith('policy.rules[0].ports')).map((p) => p.path),
    ['policy.rules[0].ports[0]', 'policy.rules[0].ports[1]', 'policy.rules[0].ports[2]', 'policy.rules[0].ports[3]', 'policy.rules[0].ports[4]'],
  );
});

test('rule names: duplicates, the reserved "special", bad characters; actions and default checked', () => {
  const problems = problemsOf(
    `${LISTENER}policy:\n  default: block\n  rules:\n` +
      '    - { name: db, action: deny, cidrs: ["10.0.0.0/8"] }\n' +
      '    - { name: db, action: deny, cidrs: ["192.168.0.0/16"] }\n' +
      '    - { name: special, action: allow, cidrs: ["169.254.169.254"] }\n' +
      '    - { name: "a b", action: permit, cidrs: ["172.16.0.0/12"] }\n' +
      '    - { name: x, cidrs: ["172.16.0.0/12"] }\n',
  );
  problemAt(problems, 'policy.default', '"allow" or "deny"');
  problemAt(problems, 'policy.rules[1].name', 'duplicate rule name "db"', 'rules[0]');
  problemAt(problems, 'policy.rules[2].name', 'reserved');
  problemAt(problems, 'policy.rules[3].name', 'rule name of letters');
  problemAt(problems, 'policy.rules[3].action', '"allow" or "deny"');
  problemAt(problems, 'policy.rules[4].action', 'required');
});

test('unknown keys in a policy are errors with a suggestion, at the top level and in a listener', () => {
  const problems = problemsOf(
    `${LISTENER}    policy: { defualt: deny }\npolicy:\n  deny_specials: false\n  rules:\n    - { name: a, action: deny, cidrs: ["10.0.0.0/8"], port: ["80"] }\n`,
  );
  problemAt(problems, 'listeners[0].policy.defualt', 'did you mean "default"?');
  problemAt(problems, 'policy.deny_specials', 'did you mean "deny_special"?');
  problemAt(problems, 'policy.rules[0].port', 'did you mean "ports"?');
});

test('shadowed rules: covered by one earlier rule, by several together, or on ports; reported at the rule', () => {
  const problems = problemsOf(
    withRules(
      '{ name: private, action: deny, cidrs: ["10.0.0.0/8"] }',
      '{ name: db, action: deny, cidrs: ["10.0.5.0/24"], ports: ["5432"] }', // [1] inside [0], all ports
      '{ name: low, action: allow, cidrs: ["192.0.2.0/25"], ports: ["1-1000"] }',
      '{ name: high, action: allow, cidrs: ["192.0.2.128/25"] }',
      '{ name: whole, action: deny, cidrs: ["192.0.2.0/24"], ports: ["80-443"] }', // [4] = [2] + [3] together
      '{ name: web1, action: allow, cidrs: ["198.51.100.0/24"], ports: ["1-100"] }',
      '{ name: web2, action: allow, cidrs: ["198.51.100.0/24"], ports: ["101-200"] }',
      '{ name: web3, action: deny, cidrs: ["198.51.100.7"], ports: ["50-150"] }', // [7] by ports of [5] and [6]
    ),
  );
  problemAt(problems, 'policy.rules[1]', 'rule "db" can never match', 'rules[0] "private"');
  problemAt(problems, 'policy.rules[4]', 'rule "whole" can never match', 'rules[2] "low"', 'rules[3] "high"');
  problemAt(problems, 'policy.rules[7]', 'rule "web3" can never match', 'rules[5] "web1"', 'rules[6] "web2"');
  assert.deepEqual(
    problems.map((p) => p.path),
    ['policy.rules[1]', 'policy.rules[4]', 'policy.rules[7]'],
  );
});

test('not shadowed: one port, one address or one family left over is enough to be reachable', () => {
  const config = parseConfigText(
    withRules(
      '{ name: web, action: allow, cidrs: ["0.0.0.0/0"], ports: ["80", "443"] }',
      '{ name: db, action: deny, cidrs: ["10.0.5.0/24"], ports: ["443-444"] }', // port 444 is left
      '{ name: half, action: allow, cidrs: ["192.0.2.0/25"] }',
      '{ name: most, action: deny, cidrs: ["192.0.2.0/24"] }', // 192.0.2.128/25 is left
      '{ name: low-broad, action: allow, cidrs: ["2001:db8::/32"], ports: ["1-1000"] }',
      '{ name: inside, action: deny, cidrs: ["2001:db8:1::/48"] }', // ports above 1000 are left
      '{ name: v4-all, action: deny, cidrs: ["0.0.0.0/0"] }',
      '{ name: v6-too, action: deny, cidrs: ["0.0.0.0/0", "::/0"] }', // its ::/0 is left
    ),
    't',
  );
  assert.equal(config.policy.rules.length, 8);
});

test('10,000 rules validate (shadow analysis included) within a generous liveness bound', () => {
  // The plain value, not YAML text: this is about the schema and the shadow analysis, not the YAML parser.
  const rules: unknown[] = [];
  for (let i = 0; i < 10_000; i++) {
    rules.push({
      name: `r${i}`,
      action: i % 2 === 0 ? 'allow' : 'deny',
      cidrs: [`10.${(i >> 8) & 255}.${i & 255}.0/24`, `2001:db8:${i.toString(16)}::/48`],
      ports: [`${1 + (i % 1000)}-${2000 + (i % 1000)}`],
    });
  }
  rules.push({ name: 'last', action: 'deny', cidrs: ['10.0.0.0/8'], ports: ['1-65535'] });
  rules.push({ name: 'dead', action: 'deny', cidrs: ['10.1.2.0/24'], ports: ['1-65535'] });
  const started = Date.now();
  const result = validateConfigValue({ listeners: [{ name: 'egress', address: '0.0.0.0:15001' }], policy: { rules } });
  assert.ok(Date.now() - started < 60_000, 'validation of 10,000 rules took over a minute');
  assert.equal(result.ok, false);
  if (!result.ok) {
    assert.deepEqual(result.problems.map((p) => p.segments.join('.')), ['policy.rules.10001']);
    assert.match(result.problems[0]!.message, /rule "dead" can never match: .*rules\[10000\] "last"/);
  }
});

test('native compact form: the exact words the addon decodes; listeners with their own policy get an index', () => {
  const config = parseConfigText(
    `${LISTENER}  - name: other\n    address: "0.0.0.0:15002"\n    policy: { default: deny, deny_special: false }\n` +
      withRules('{ name: no-db, action: deny, cidrs: ["10.0.5.0/24"], ports: ["5432", "6379-6380"] }', '{ name: web, action: allow, cidrs: ["2001:db8::/32"] }').slice(LISTENER.length),
    't',
  );
  const native = nativePolicy(config.policy);
  assert.deepEqual(native.ruleNames, ['no-db', 'web']);
  assert.deepEqual([...native.ruleActions], [0, 1]);
  // Same words as cpp/test/policy_tests.cc "decodePolicyWords".
  assert.deepEqual([...native.cidrs], [0, 4, 24, 0x0a000500, 0, 0, 0, 1, 6, 32, 0x20010db8, 0, 0, 0]);
  assert.deepEqual([...native.ports], [0, 5432, 5432, 0, 6379, 6380]);
  assert.equal(native.defaultAction, 'allow');
  assert.equal(native.denySpecial, true);
  const all = nativePolicies(config);
  assert.deepEqual(all.listenerPolicy, [0, 1]);
  assert.equal(all.policies.length, 2);
  assert.equal(all.policies[1]?.defaultAction, 'deny');
  assert.equal(all.policies[1]?.denySpecial, false);
});

test('the addon copies the compact form and refuses a malformed one with a TypeError naming it', () => {
  const binding = loadBinding();
  const config = parseConfigText(withRules('{ name: no-db, action: deny, cidrs: ["10.0.5.0/24", "::1"], ports: ["5432"] }'), 't');
  const base = { connectTimeoutMs: 1000, idleTimeoutMs: 1000, upstreamMark: 0 };
  const worker = new binding.NativeWorker({ ...base, policies: nativePolicies(config).policies });
  worker.close();
  const good = nativePolicy(config.policy);
  const bad = [
    { ...good, cidrs: new Uint32Array([5, 4, 24, 0, 0, 0, 0]) }, // rule index out of range
    { ...good, cidrs: new Uint32Array([0, 4, 40, 0, 0, 0, 0]) }, // prefix too long
    { ...good, ports: new Uint32Array([0, 10, 9]) },
    { ...good, ruleActions: new Uint8Array([1, 1]) },
    { ...good, cidrs: new Float64Array(7) as unknown as Uint32Array },
  ];
  for (const policy of bad) {
    assert.throws(() => new binding.NativeWorker({ ...base, policies: [policy] }), (err: unknown) => err instanceof TypeError && /policy option/.test(err.message));
  }
});

test('policy counters: names once from the addon (merged across policies), values appended to every stats block', () => {
  const binding = loadBinding();
  const config = parseConfigText(
    `${LISTENER}  - name: own\n    address: "0.0.0.0:15002"\n    policy:\n      rules:\n        - { name: web, action: deny, cidrs: ["10.0.0.0/8"] }\n        - { name: only-here, action: deny, cidrs: ["192.168.0.0/16"] }\n  - name: top\n    address: "0.0.0.0:15003"\n` +
      withRules('{ name: no-db, action: deny, cidrs: ["10.0.5.0/24"] }', '{ name: web, action: deny, cidrs: ["172.16.0.0/12"] }').slice(LISTENER.length),
    't',
  );
  assert.deepEqual(listenerPolicyIndexes(config.listeners), [0, 1, 0]);
  const { policies } = nativePolicies(config);
  const names = binding.policyCounterNames(policies);
  // A name shared by two policies (web, special, the total) appears once: its values are summed.
  assert.deepEqual(names, ['policy.no-db.denied', 'policy.web.denied', 'policy.special.denied', 'policy_denied', 'policy.only-here.denied']);
  const worker = new binding.NativeWorker({ connectTimeoutMs: 1000, idleTimeoutMs: 1000, upstreamMark: 0, policies });
  try {
    const values = worker.stats();
    assert.equal(values.length, binding.statNames.length + names.length);
    assert.deepEqual([...values.subarray(binding.statNames.length)], [0, 0, 0, 0, 0]);
    const options = { name: 'x', host: '127.0.0.1', port: 0, transparent: false, backlog: 8, policy: 2 };
    const socket = new binding.ListenSocket(options);
    try {
      assert.throws(() => worker.attachListener(options, socket.fd), /policy index out of range/);
    } finally {
      socket.close();
    }
  } finally {
    worker.close();
  }
  assert.deepEqual(binding.policyCounterNames([]), []);
});

test('Prometheus: per-rule policy counters form one labelled counter family; the total keeps its own name', () => {
  const text = prometheusText({ downstream_cx_total: 4, 'policy.no-db.denied': 2, 'policy.special.denied': 1, policy_denied: 3 });
  assert.match(text, /^# TYPE splicegate_policy_rule_denied_total counter$/m);
  assert.match(text, /^splicegate_policy_rule_denied_total\{rule="no-db"\} 2$/m);
  assert.match(text, /^splicegate_policy_rule_denied_total\{rule="special"\} 1$/m);
  assert.match(text, /^splicegate_policy_denied_total 3$/m);
  assert.equal(text.match(/^# TYPE splicegate_policy_rule_denied_total/gm)?.length, 1, 'one TYPE line for the family');
  assert.doesNotMatch(text, /policy\.no-db/, 'no raw dotted names (not valid metric names)');
});

test('shadow analysis agrees with brute force over a small address and port space (randomized)', () => {
  // Rules on 10.0.0.0/28 with ports 1..8: small enough to enumerate every (address, port), dense
  // enough that earlier rules often tile a later one together.
  let seed = 7;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  let shadowedSeen = 0;
  for (let round = 0; round < 300; round++) {
    const rules: PolicyRuleConfig[] = [];
    const count = 3 + rand(9);
    for (let i = 0; i < count; i++) {
      const cidrs: Cidr[] = [];
      for (let c = 0, n = 1 + rand(2); c < n; c++) {
        const prefix = 28 + rand(5);
        const host = rand(16) & ~((1 << (32 - prefix)) - 1);
        cidrs.push({ family: 4, network: `10.0.0.${host}`, prefix, text: `10.0.0.${host}/${prefix}` });
      }
      const ports: PortRange[] = [];
      for (let k = 0, n = 1 + rand(2); k < n; k++) {
        const first = 1 + rand(8);
        ports.push({ first, last: Math.min(8, first + rand(4)) });
      }
      rules.push({ name: `r${i}`, action: 'deny', cidrs, ports });
    }
    const matches = (r: PolicyRuleConfig, host: number, port: number): boolean =>
      r.cidrs.some((c) => (host >> (32 - c.prefix)) === (Number(c.network.split('.')[3]) >> (32 - c.prefix))) &&
      r.ports.some((p) => port >= p.first && port <= p.last);
    const expected = rules.flatMap((rule, j) => {
      for (let host = 0; host < 16; host++) {
        for (let port = 1; port <= 8; port++) {
          if (matches(rule, host, port) && !rules.slice(0, j).some((earlier) => matches(earlier, host, port))) return [];
        }
      }
      return [j];
    });
    assert.deepEqual(findShadowedRules(rules).map((s) => s.rule), expected, `round ${round}: ${JSON.stringify(rules)}`);
    shadowedSeen += expected.length;
  }
  assert.ok(shadowedSeen > 100, `only ${shadowedSeen} shadowed rules generated: the comparison would prove little`);
});
