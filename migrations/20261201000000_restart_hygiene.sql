-- Restart hygiene, the database's clock for liveness, and one expiry sweeper at a time.
--
-- `boot_id` names a node's process life: a registration with another one ends the sessions of the
-- previous life. `drained_by_admin` keeps an admin's drain across re-registrations (an edge that
-- drains itself on shutdown is active again when it comes back).

ALTER TABLE nodes ADD COLUMN boot_id text NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN drained_by_admin boolean NOT NULL DEFAULT false;

-- Milliseconds since the Unix epoch by the database's clock (the transaction's start). Liveness
-- (`nodes.last_seen`, the sweeper lease) is stamped and judged with it, so control instances with
-- skewed clocks agree on which nodes are alive.
CREATE FUNCTION rim_now_ms() RETURNS int8 LANGUAGE sql STABLE
    AS $$ SELECT (extract(epoch FROM now()) * 1000)::int8 $$;

-- The one row naming the control instance that runs the expiry sweep until `expires_at`.
CREATE TABLE sweeper_lease (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder     text NOT NULL,
    expires_at int8 NOT NULL
);
