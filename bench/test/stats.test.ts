// Unit tests for the benchmark's parsers and statistics (no lab needed):
//   npx tsc -p tsconfig.json && node --test dist/bench/test/
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseIperf, parseWrk, wrkErrorCount } from '../lib/parse';
import { median, spread } from '../lib/stats';

test('median and spread', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
  assert.ok(Number.isNaN(median([])));
  assert.deepEqual(spread([5, Number.NaN, 1, 3]), { median: 3, min: 1, max: 5, n: 3 });
  assert.equal(spread([]), null);
});

test('parseWrk reads the WRKJSON line', () => {
  const out = [
    'Running 2s test @ http://10.10.2.2/small',
    'WRKJSON {"requests":2000,"bytes":2500000,"duration_us":2000000,"errors":{"connect":0,"read":1,"write":0,"status":2,"timeout":0},"latency_us":{"min":50,"mean":120.5,"p50":100,"p90":200,"p99":900,"p999":1500,"max":3000}}',
  ].join('\n');
  const r = parseWrk(out);
  assert.equal(r.requestsPerSec, 1000);
  assert.equal(r.gbitPerSec, 0.01);
  assert.equal(r.latencyUs.p99, 900);
  assert.equal(wrkErrorCount(r), 3);
  assert.throws(() => parseWrk('no summary'), /WRKJSON/);
});

test('parseIperf reads sum_received and surfaces iperf3 errors', () => {
  const ok = JSON.stringify({
    end: {
      sum_sent: { bytes: 1000, seconds: 2, bits_per_second: 4000, retransmits: 3 },
      sum_received: { bytes: 900, seconds: 2, bits_per_second: 3.6e9 },
    },
  });
  const r = parseIperf(ok);
  assert.equal(r.bytes, 900);
  assert.equal(r.gbitPerSec, 3.6);
  assert.equal(r.retransmits, 3);
  assert.throws(() => parseIperf(JSON.stringify({ error: 'unable to connect to server' })), /unable to connect/);
  assert.throws(() => parseIperf('garbage'), /not JSON/);
});
