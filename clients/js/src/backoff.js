// Jittered exponential backoff for reconnects, with the parameters of the HTTPDNS answer
// (`backoff: {base_delay, factor, jitter, max_delay}`, seconds there, milliseconds here).
//
// The n-th pause after a success (n = 0, 1, ...) is nominally min(max, base × factor^n); the pause
// taken is a random point in [nominal × (1 − jitter), nominal], so it never exceeds max and many
// clients dropped by one edge do not come back in lockstep.

/** Defaults, in milliseconds, equal to rim control's HTTPDNS defaults. */
export const BACKOFF_DEFAULTS = Object.freeze({ base: 3_000, factor: 1.8, jitter: 0.3, max: 300_000 });

function valid(value, ok) {
  return typeof value === 'number' && Number.isFinite(value) && ok(value);
}

/**
 * Normalised parameters: anything missing or invalid falls back to `fallback`.
 * @param {{base?: number, factor?: number, jitter?: number, max?: number}} [params]
 * @param {{base: number, factor: number, jitter: number, max: number}} [fallback]
 */
export function backoffParams(params = {}, fallback = BACKOFF_DEFAULTS) {
  const base = valid(params.base, (v) => v > 0) ? params.base : fallback.base;
  const factor = valid(params.factor, (v) => v >= 1) ? params.factor : fallback.factor;
  const jitter = valid(params.jitter, (v) => v >= 0 && v <= 1) ? params.jitter : fallback.jitter;
  let max = valid(params.max, (v) => v > 0) ? params.max : fallback.max;
  if (max < base) max = base;
  return { base, factor, jitter, max };
}

/**
 * Backoff parameters (milliseconds) from a goim HTTPDNS answer's `backoff` object (seconds), or
 * null if the answer has none. Invalid fields are left out.
 * @param {unknown} answer
 */
export function backoffFromAnswer(answer) {
  const b = answer && typeof answer === 'object' ? /** @type {any} */ (answer).backoff : undefined;
  if (!b || typeof b !== 'object') return null;
  const out = {};
  if (valid(b.base_delay, (v) => v > 0)) out.base = b.base_delay * 1000;
  if (valid(b.max_delay, (v) => v > 0)) out.max = b.max_delay * 1000;
  if (valid(b.factor, (v) => v >= 1)) out.factor = b.factor;
  if (valid(b.jitter, (v) => v >= 0 && v <= 1)) out.jitter = b.jitter;
  return out;
}

export class Backoff {
  /**
   * @param {{base?: number, factor?: number, jitter?: number, max?: number}} [params] milliseconds
   * @param {() => number} [random] uniform in [0, 1)
   */
  constructor(params = {}, random = Math.random) {
    this._random = random;
    this._failures = 0;
    this.configure(params);
  }

  /** Replaces the parameters (missing ones keep their defaults); the failure count is kept. */
  configure(params = {}) {
    const p = backoffParams(params);
    this.base = p.base;
    this.factor = p.factor;
    this.jitter = p.jitter;
    this.max = p.max;
    return this;
  }

  /** Pauses taken since the last reset. */
  get attempts() {
    return this._failures;
  }

  /** The nominal (un-jittered) pause the next call to `next()` is based on. */
  nominal() {
    return Math.min(this.max, this.base * Math.pow(this.factor, this._failures));
  }

  /** The pause before the next attempt, in milliseconds; grows the following one. */
  next() {
    const nominal = this.nominal();
    let r = Number(this._random());
    if (!(r >= 0)) r = 0;
    if (r > 1) r = 1;
    this._failures += 1;
    return Math.round(nominal * (1 - this.jitter * r));
  }

  /** Back to the base pause (after a successful connection). */
  reset() {
    this._failures = 0;
  }
}
