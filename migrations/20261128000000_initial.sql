-- rim's control-plane state: regions, edge nodes, sessions, room counts per node and API keys.
--
-- Identifiers sort bytewise (COLLATE "C") so listings and ties order the same as the in-memory store,
-- whatever locale the database was created with. Times are milliseconds since the Unix epoch (int8),
-- the unit edges report in. Unsigned 64-bit values from edges (connection ids) are stored bit-cast
-- into int8; counts are clamped to the int8 range by the store.

CREATE TABLE regions (
    name      text COLLATE "C" PRIMARY KEY,
    latitude  float8 NOT NULL,
    longitude float8 NOT NULL
);

CREATE TABLE nodes (
    id               text COLLATE "C" PRIMARY KEY,
    region           text COLLATE "C" NOT NULL REFERENCES regions (name),
    latitude         float8 NOT NULL,
    longitude        float8 NOT NULL,
    hostname         text NOT NULL,
    addresses        text[] NOT NULL,
    tcp_port         int4 NOT NULL CHECK (tcp_port BETWEEN 0 AND 65535),
    ws_port          int4 NOT NULL CHECK (ws_port BETWEEN 0 AND 65535),
    wss_port         int4 NOT NULL CHECK (wss_port BETWEEN 0 AND 65535),
    push_url         text NOT NULL,
    weight           int8 NOT NULL CHECK (weight >= 0),
    state            text NOT NULL CHECK (state IN ('active', 'draining', 'dead')),
    connection_count int8 NOT NULL DEFAULT 0,
    ip_count         int8 NOT NULL DEFAULT 0,
    last_seen        int8 NOT NULL
);

-- The expiry sweep looks for live nodes that stopped reporting.
CREATE INDEX nodes_live_last_seen ON nodes (last_seen) WHERE state <> 'dead';

-- One row per connection key. No foreign key to nodes: the node is checked once per event batch,
-- and a per-row key check would cost on the hottest write path; sessions of a dead node are
-- removed by the expiry sweep together with the node's state change.
--
-- Renewals are the most frequent write (every live connection, periodically) and change only `room`
-- and `expires_at`. Neither is indexed and pages keep free space (fillfactor), so a renewal is a
-- heap-only (HOT) update that writes no index entry. The price is that the expiry sweep finds
-- sessions past `expires_at` with a sequential scan; it is a periodic safety net (live nodes
-- disconnect their sessions, dead nodes lose them by node id), and one scan per sweep costs far
-- less than three index insertions per renewal (measured with `store-bench`).
CREATE TABLE sessions (
    key           text COLLATE "C" PRIMARY KEY,
    mid           int8 NOT NULL,
    node_id       text COLLATE "C" NOT NULL,
    room          text NOT NULL,
    platform      text NOT NULL,
    accepts       int4[] NOT NULL,
    connection_id int8 NOT NULL,
    ip            text NOT NULL,
    connected_at  int8 NOT NULL,
    expires_at    int8 NOT NULL
) WITH (fillfactor = 85);

-- Pushes to a user resolve mid -> keys.
CREATE INDEX sessions_mid ON sessions (mid);
-- A dead node's sessions are removed together.
CREATE INDEX sessions_node ON sessions (node_id);

-- Online count of each room on each node, as of the node's last heartbeat (which replaces them all).
CREATE TABLE room_counts (
    node_id text COLLATE "C" NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    room    text COLLATE "C" NOT NULL,
    count   int8 NOT NULL CHECK (count > 0),
    PRIMARY KEY (node_id, room)
);

-- Room lookups and the `type://` prefix scan of top rooms (a "C" collation btree serves LIKE 'prefix%').
CREATE INDEX room_counts_room ON room_counts (room);

-- Business callers' API keys; only a SHA-256 of the secret is stored.
CREATE TABLE api_keys (
    id          text COLLATE "C" PRIMARY KEY,
    secret_hash bytea NOT NULL UNIQUE,
    name        text NOT NULL,
    scopes      text[] NOT NULL,
    created_at  int8 NOT NULL,
    revoked_at  int8
);
