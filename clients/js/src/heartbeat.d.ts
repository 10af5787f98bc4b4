/** Interval bounds in milliseconds. */
export interface HeartbeatOptions {
  /** Shortest interval (default 60 000). */
  min?: number;
  /** Longest interval (default 300 000). */
  max?: number;
  /** Growth / shrink step (default 30 000). */
  step?: number;
  /** First interval (default `min`). */
  initial?: number;
}

export declare const HEARTBEAT_DEFAULTS: Readonly<{ min: 60000; max: 300000; step: 30000 }>;

/** The seed's adaptive heartbeat: +step after each survived period, −step (and ≤ last good) after a failed one. */
export declare class AdaptiveHeartbeat {
  constructor(options?: HeartbeatOptions);
  readonly min: number;
  readonly max: number;
  readonly step: number;
  /** The interval before the next heartbeat, in milliseconds. */
  readonly interval: number;
  /** Longest interval known to have worked, or null. */
  readonly lastGood: number | null;
  /** Ceiling learnt from failures (Infinity until one). */
  readonly ceiling: number;
  /** Effective lower bound. */
  readonly floor: number;
  /** Effective upper bound (max, server limit, learnt ceiling). */
  readonly top: number;
  /** The current interval was survived; returns the next interval. */
  success(): number;
  /** The current interval failed; returns the next interval. */
  failure(): number;
  /** Caps the interval at what the server tolerates (null removes the cap); returns the interval. */
  setLimit(ms: number | null): number;
  /** Forgets what was learnt; returns the interval. */
  reset(): number;
}
