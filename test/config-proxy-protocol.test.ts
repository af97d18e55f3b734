// The PROXY protocol config keys: listeners[].proxy_protocol (trusted_sources, required, timeout)
// and cluster.send_proxy_protocol, and cluster.original_source. Parsed values are exact; every bad input is a problem at its
// own path.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCidr } from '../src/config/cidr';
import { parseConfigText } from '../src/config/load';
import { problemAt, problemsOf } from './config-problems';

const LISTENER = 'listeners:\n  - name: edge\n    address: "0.0.0.0:15001"\n';

function withProxyProtocol(block: string): string {
  return `${LISTENER}    proxy_protocol: ${block}\n`;
}

test('proxy_protocol: defaults are required: true and timeout 3s; off when absent', () => {
  const config = parseConfigText(withProxyProtocol('{ trusted_sources: ["10.0.0.0/8"] }'), 't');
  assert.deepEqual(config.listeners[0]?.proxyProtocol, {
    trustedSources: [{ family: 4, network: '10.0.0.0', prefix: 8, text: '10.0.0.0/8' }],
    required: true,
    timeoutMs: 3000,
  });
  assert.equal(parseConfigText(LISTENER, 't').listeners[0]?.proxyProtocol, null);
});

test('proxy_protocol: trusted_sources is required and may not be empty', () => {
  problemAt(problemsOf(withProxyProtocol('{ required: true }')), 'listeners[0].proxy_protocol.trusted_sources', 'required');
  problemAt(problemsOf(withProxyProtocol('{ trusted_sources: [] }')), 'listeners[0].proxy_protocol.trusted_sources', 'at least one');
  problemAt(problemsOf(withProxyProtocol('{}')), 'listeners[0].proxy_protocol.trusted_sources', 'required');
});

test('proxy_protocol: each bad CIDR, the timeout and unknown keys are reported at their paths', () => {
  const problems = problemsOf(
    withProxyProtocol('{ trusted_sources: ["10.0.0.0/8", "10.0.0.1/8", "10.0.0.0/33", "example.com", 10], required: "yes", timeout: 3, tiemout: 1s }'),
  );
  problemAt(problems, 'listeners[0].proxy_protocol.trusted_sources[1]', 'write "10.0.0.0/8" for the network');
  problemAt(problems, 'listeners[0].proxy_protocol.trusted_sources[2]', 'prefix length must be 0..32');
  problemAt(problems, 'listeners[0].proxy_protocol.trusted_sources[3]', 'hostnames are not allowed');
  problemAt(problems, 'listeners[0].proxy_protocol.trusted_sources[4]', 'expected a CIDR string');
  problemAt(problems, 'listeners[0].proxy_protocol.required', 'expected true or false');
  problemAt(problems, 'listeners[0].proxy_protocol.timeout', 'a unit is required');
  problemAt(problems, 'listeners[0].proxy_protocol.tiemout', 'did you mean "timeout"?');
  assert.equal(problems.filter((p) => p.path.startsWith('listeners[0].proxy_protocol.trusted_sources[0]')).length, 0);
});

test('cluster.send_proxy_protocol: off by default; v1, v2 and off accepted; anything else refused', () => {
  assert.equal(parseConfigText(LISTENER, 't').cluster.sendProxyProtocol, 'off');
  for (const value of ['v1', 'v2', 'off'] as const) {
    assert.equal(parseConfigText(`${LISTENER}cluster: { send_proxy_protocol: ${value} }\n`, 't').cluster.sendProxyProtocol, value);
  }
  problemAt(problemsOf(`${LISTENER}cluster: { send_proxy_protocol: v3 }\n`), 'cluster.send_proxy_protocol', 'expected "off" or "v1" or "v2", got "v3"');
  problemAt(problemsOf(`${LISTENER}cluster: { send_proxy_protocol: true }\n`), 'cluster.send_proxy_protocol', 'got true');
});

test('CIDRs: canonical forms, bare IPs as single hosts', () => {
  const ok: Array<[string, string]> = [
    ['10.0.0.0/8', '10.0.0.0/8'],
    ['0.0.0.0/0', '0.0.0.0/0'],
    ['192.0.2.7', '192.0.2.7/32'],
    ['::/0', '::/0'],
    ['::1', '::1/128'],
    ['2001:DB8::/32', '2001:db8::/32'],
    ['2001:db8:0:0:0:0:0:0/32', '2001:db8::/32'],
    ['fe80::/10', 'fe80::/10'],
    ['2001:db8:0:1:0:0:0:0/64', '2001:db8:0:1::/64'],
    ['1:0:0:2:0:0:0:0/64', '1:0:0:2::/64'],
  ];
  for (const [input, text] of ok) {
    const result = parseCidr(input);
    assert.ok(result.ok, `${input}: ${result.ok ? '' : result.message}`);
    if (result.ok) assert.equal(result.value.text, text, input);
  }
});

test('CIDRs: host bits, prefix lengths, zones, brackets, leading zeros and names are refused', () => {
  const bad: Array<[string, string]> = [
    ['10.0.0.1/8', 'write "10.0.0.0/8" for the network, or "10.0.0.1/32" for the one address'],
    ['2001:db8::1/32', 'write "2001:db8::/32"'],
    ['fe80::1/9', 'write "fe80::/9"'],
    ['1:0:0:2::/16', 'write "1::/16"'],
    ['::ffff:10.0.0.0/104', 'write the IPv4 range instead ("10.0.0.0/8")'],
    ['10.0.0.0/33', '0..32'],
    ['::/129', '0..128'],
    ['10.0.0.0/08', '0..32'],
    ['10.0.0.0/', '0..32'],
    ['10.0.0.0/-1', '0..32'],
    ['fe80::1%eth0', 'zone'],
    ['[::1]/128', 'brackets'],
    ['010.0.0.0/8', 'not an IP address'],
    ['localhost', 'hostnames are not allowed'],
    ['', 'not an IP address'],
  ];
  for (const [input, part] of bad) {
    const result = parseCidr(input);
    assert.equal(result.ok, false, input);
    if (!result.ok) assert.ok(result.message.includes(part), `${input}: ${result.message}`);
  }
});

test('cluster.original_source: off by default; a boolean; refused beside preconnect', () => {
  assert.equal(parseConfigText(LISTENER, 't').cluster.originalSource, false);
  assert.equal(parseConfigText(`${LISTENER}cluster: { original_source: true }\n`, 't').cluster.originalSource, true);
  problemAt(problemsOf(`${LISTENER}cluster: { original_source: "yes" }\n`), 'cluster.original_source', 'expected true or false');
  problemAt(
    problemsOf(`${LISTENER}cluster: { original_source: true, preconnect: { ports: [80] } }\n`),
    'cluster.original_source',
    'cannot be combined with preconnect',
  );
});
