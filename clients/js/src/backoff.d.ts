/** Reconnect pacing, in milliseconds (the HTTPDNS answer gives seconds). */
export interface BackoffParams {
  /** First pause (default 3 000). */
  base: number;
  /** Growth per failure, ≥ 1 (default 1.8). */
  factor: number;
  /** Random spread in [0, 1]: a pause is uniform in [nominal × (1 − jitter), nominal] (default 0.3). */
  jitter: number;
  /** Longest pause (default 300 000). */
  max: number;
}

export declare const BACKOFF_DEFAULTS: Readonly<BackoffParams>;

/** Normalised parameters; missing or invalid values fall back to `fallback` (default BACKOFF_DEFAULTS). */
export declare function backoffParams(params?: Partial<BackoffParams>, fallback?: BackoffParams): BackoffParams;

/** Milliseconds parameters from a goim answer's `backoff` (seconds), invalid fields left out; null without one. */
export declare function backoffFromAnswer(answer: unknown): Partial<BackoffParams> | null;

export declare class Backoff implements BackoffParams {
  constructor(params?: Partial<BackoffParams>, random?: () => number);
  base: number;
  factor: number;
  jitter: number;
  max: number;
  /** Pauses taken since the last reset. */
  readonly attempts: number;
  /** Replaces the parameters (missing ones: defaults); keeps the failure count. */
  configure(params?: Partial<BackoffParams>): this;
  /** min(max, base × factor^attempts). */
  nominal(): number;
  /** The next pause in milliseconds (jittered); grows the following one. */
  next(): number;
  reset(): void;
}
