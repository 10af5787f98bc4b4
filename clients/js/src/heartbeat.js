// The seed's adaptive heartbeat (goim gateway notes, "自适应心跳时间"): the interval lives in
// [min = 60 s, max = 300 s]; each period the connection survives adds a step of 30 s; a failed
// period takes the interval back down (one step, and never above the last value that worked).
//
// A failure also lowers a ceiling: the interval does not grow back to a value that failed (a NAT
// that drops idle mappings after 2 minutes would otherwise be probed again and again). `reset()`
// forgets what was learnt (for example when the network changes).

/** Defaults of the seed, in milliseconds. */
export const HEARTBEAT_DEFAULTS = Object.freeze({ min: 60_000, max: 300_000, step: 30_000 });

function positive(name, value) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new RangeError(`heartbeat ${name} must be a positive number of milliseconds, got ${String(value)}`);
  }
  return value;
}

export class AdaptiveHeartbeat {
  /**
   * @param {{min?: number, max?: number, step?: number, initial?: number}} [options] milliseconds
   */
  constructor(options = {}) {
    this.min = positive('min', options.min ?? HEARTBEAT_DEFAULTS.min);
    this.max = positive('max', options.max ?? HEARTBEAT_DEFAULTS.max);
    this.step = positive('step', options.step ?? HEARTBEAT_DEFAULTS.step);
    if (this.max < this.min) throw new RangeError('heartbeat max must not be below min');
    this._initial = options.initial === undefined ? this.min : positive('initial', options.initial);
    /** Upper bound imposed by the server (its heartbeat deadline), or Infinity. */
    this._limit = Infinity;
    this.reset();
  }

  /** Lowest interval in effect (min, unless the server's limit is lower). */
  get floor() {
    return Math.min(this.min, this.top);
  }

  /** Highest interval in effect: max, the server's limit and the learnt ceiling. */
  get top() {
    return Math.max(Math.min(this.max, this._limit, this._ceiling), Math.min(this.min, this._limit));
  }

  /** The interval to wait before the next heartbeat, in milliseconds. */
  get interval() {
    return Math.min(Math.max(this._current, this.floor), this.top);
  }

  /** The longest interval known to have worked, or null. */
  get lastGood() {
    return this._lastGood;
  }

  /** The ceiling learnt from failures (Infinity until a failure). */
  get ceiling() {
    return this._ceiling;
  }

  /** The connection survived a full `interval`: remember it and try a step longer next time. */
  success() {
    const survived = this.interval;
    this._lastGood = this._lastGood === null ? survived : Math.max(this._lastGood, survived);
    this._current = Math.min(survived + this.step, this.top);
    return this.interval;
  }

  /** The connection did not survive `interval`: shrink by a step, and not above the last good value. */
  failure() {
    const failed = this.interval;
    let next = failed - this.step;
    if (this._lastGood !== null) {
      if (this._lastGood >= failed) this._lastGood = null; // it failed: not good any more
      else next = Math.min(next, this._lastGood);
    }
    this._ceiling = Math.max(this.floor, failed - this.step);
    this._current = Math.max(next, this.floor);
    return this.interval;
  }

  /**
   * Caps the interval at what the server tolerates (milliseconds; null or Infinity removes the cap).
   * @param {number | null} ms
   */
  setLimit(ms) {
    this._limit = ms === null || ms === undefined || !(ms > 0) ? Infinity : ms;
    return this.interval;
  }

  /** Forgets what was learnt: back to the initial interval, no ceiling. */
  reset() {
    this._current = this._initial;
    this._lastGood = null;
    this._ceiling = Infinity;
    return this.interval;
  }
}
