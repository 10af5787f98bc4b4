-- Per-key limits on API keys: which target kinds a key may push to (NULL: every kind) and how fast
-- it may push (a token bucket of `rate_burst` refilled at `rate_per_second`; both NULL: no limit).

ALTER TABLE api_keys ADD COLUMN target_kinds text[];
ALTER TABLE api_keys ADD COLUMN rate_per_second int4;
ALTER TABLE api_keys ADD COLUMN rate_burst int4;

ALTER TABLE api_keys ADD CONSTRAINT api_keys_rate_limit_check CHECK (
    (rate_per_second IS NULL AND rate_burst IS NULL)
    OR (rate_per_second > 0 AND rate_burst > 0)
);
