import { test } from 'node:test';
import assert from 'node:assert/strict';

import { AdaptiveHeartbeat } from '../src/heartbeat.js';
import { Backoff, backoffFromAnswer, backoffParams, BACKOFF_DEFAULTS } from '../src/backoff.js';

const S = 1000;

test('heartbeat starts at 60 s and grows by 30 s per survived period up to 300 s', () => {
  const hb = new AdaptiveHeartbeat();
  assert.equal(hb.interval, 60 * S);
  const seen = [];
  for (let i = 0; i < 12; i++) seen.push(hb.success() / S);
  assert.deepEqual(seen, [90, 120, 150, 180, 210, 240, 270, 300, 300, 300, 300, 300]);
  assert.equal(hb.lastGood, 300 * S);
});

test('a failed period shrinks by a step back to the last good value, and growth stops below it', () => {
  const hb = new AdaptiveHeartbeat();
  hb.success(); // 60 survived -> 90
  hb.success(); // 90 survived -> 120
  hb.success(); // 120 survived -> 150
  assert.equal(hb.interval, 150 * S);
  assert.equal(hb.failure(), 120 * S); // 150 failed: back to the last good value
  assert.equal(hb.ceiling, 120 * S);
  // never probes 150 again
  assert.equal(hb.success(), 120 * S);
  assert.equal(hb.success(), 120 * S);
  // the network got worse: 120 fails too
  assert.equal(hb.failure(), 90 * S);
  assert.equal(hb.lastGood, null);
  assert.equal(hb.failure(), 60 * S);
  assert.equal(hb.failure(), 60 * S, 'never below min');
  assert.equal(hb.success(), 60 * S, 'ceiling is now min');
  // a network change forgets it
  assert.equal(hb.reset(), 60 * S);
  assert.equal(hb.success(), 90 * S);
});

test('a failure right at the start stays at min', () => {
  const hb = new AdaptiveHeartbeat();
  assert.equal(hb.failure(), 60 * S);
  assert.equal(hb.success(), 60 * S);
});

test('heartbeat bounds are configurable and validated; a server limit caps them', () => {
  const hb = new AdaptiveHeartbeat({ min: 10, max: 40, step: 10 });
  assert.deepEqual([hb.interval, hb.success(), hb.success(), hb.success(), hb.success()], [10, 20, 30, 40, 40]);
  assert.equal(hb.setLimit(25), 25);
  assert.equal(hb.success(), 25);
  assert.equal(hb.setLimit(5), 5, 'a limit below min wins: the server closes us otherwise');
  assert.equal(hb.setLimit(null), 25, 'removing the limit keeps the interval');
  assert.equal(hb.success(), 35, 'and growth resumes');
  assert.throws(() => new AdaptiveHeartbeat({ min: 0 }), RangeError);
  assert.throws(() => new AdaptiveHeartbeat({ min: 100, max: 50 }), RangeError);
  assert.throws(() => new AdaptiveHeartbeat({ step: -1 }), RangeError);
  const seeded = new AdaptiveHeartbeat({ initial: 120 * S });
  assert.equal(seeded.interval, 120 * S);
});

test('backoff grows by factor from base to max; jitter only shortens a pause', () => {
  const high = new Backoff({ base: 1000, factor: 2, jitter: 0.5, max: 10_000 }, () => 0);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => high.next()), [1000, 2000, 4000, 8000, 10_000, 10_000]);
  assert.equal(high.attempts, 6);
  high.reset();
  assert.equal(high.next(), 1000);

  const low = new Backoff({ base: 1000, factor: 2, jitter: 0.5, max: 10_000 }, () => 0.999999);
  assert.deepEqual([1, 2, 3, 4, 5].map(() => low.next()), [500, 1000, 2000, 4000, 5000]);

  // with real randomness every pause lies in [nominal × (1 − jitter), nominal]
  const real = new Backoff({ base: 3000, factor: 1.8, jitter: 0.3, max: 300_000 });
  for (let i = 0; i < 50; i++) {
    const nominal = real.nominal();
    const pause = real.next();
    assert.ok(pause <= nominal && pause >= Math.floor(nominal * 0.7), `${pause} vs ${nominal}`);
  }
  assert.equal(real.nominal(), 300_000);
});

test('backoff defaults equal rim control defaults; bad parameters fall back', () => {
  assert.deepEqual({ ...BACKOFF_DEFAULTS }, { base: 3000, factor: 1.8, jitter: 0.3, max: 300_000 });
  const b = new Backoff();
  assert.equal(b.nominal(), 3000);
  assert.deepEqual(backoffParams({ base: -1, factor: 0.5, jitter: 2, max: NaN }), { ...BACKOFF_DEFAULTS });
  assert.deepEqual(backoffParams({ base: 5000, max: 1000 }), { base: 5000, factor: 1.8, jitter: 0.3, max: 5000 });
  const random = new Backoff({}, () => NaN);
  assert.equal(random.next(), 3000, 'a broken random source is clamped');
});

test('backoff parameters come from the goim answer, in seconds', () => {
  const answer = { backoff: { max_delay: 120, base_delay: 1, factor: 1.6, jitter: 0.2 } };
  assert.deepEqual(backoffFromAnswer(answer), { base: 1000, max: 120_000, factor: 1.6, jitter: 0.2 });
  assert.deepEqual(backoffFromAnswer({ backoff: { max_delay: 0, base_delay: 'x', factor: 0.1, jitter: 0 } }), { jitter: 0 });
  assert.equal(backoffFromAnswer({}), null);
  assert.equal(backoffFromAnswer(null), null);
  const b = new Backoff({}, () => 0).configure(backoffFromAnswer(answer));
  assert.deepEqual([b.next(), b.next(), b.next()], [1000, 1600, 2560]);
});
