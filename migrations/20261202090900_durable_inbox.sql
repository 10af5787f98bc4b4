-- Durable delivery (issue 9): per-user inboxes, the room log, acked positions and push receipts.
-- The rules are in store/src/inbox.rs; the reasoning for the layout is here.
--
-- Writes are the hot path (every user and key push is stored before its caller is answered), so
-- every table has exactly the indexes its reads need and no more: the primary keys serve the reads
-- (a user's pushes after a number, a push's receipts), and retention by age uses BRIN indexes,
-- which cost almost nothing to maintain on append-mostly tables whose time column grows with
-- insertion order. Heads are updated on every append and keep free space in their pages
-- (fillfactor) so the update stays a heap-only tuple update.

-- One row per user that ever had a push stored: the numbering of its stream.
CREATE TABLE inbox_heads (
    mid         int8 PRIMARY KEY,
    epoch       int8 NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    head_seq    int8 NOT NULL CHECK (head_seq >= 0),    -- last number handed out
    trimmed_seq int8 NOT NULL CHECK (trimmed_seq >= 0)  -- every number at or below it is gone
) WITH (fillfactor = 70);

-- The pushes kept for a user, by number. `key` is set for key pushes (only that device reads them).
CREATE TABLE inbox_messages (
    mid        int8 NOT NULL,
    seq        int8 NOT NULL,
    message_id uuid NOT NULL,
    key        text COLLATE "C",
    operation  int4 NOT NULL,
    body       bytea NOT NULL,
    created_at int8 NOT NULL,
    PRIMARY KEY (mid, seq)
);
CREATE INDEX inbox_messages_created_at ON inbox_messages USING brin (created_at);

-- Each device's cumulative ack, in the epoch it was given in.
CREATE TABLE inbox_acks (
    mid       int8 NOT NULL,
    key       text COLLATE "C" NOT NULL,
    epoch     int8 NOT NULL,
    acked_seq int8 NOT NULL,
    acked_at  int8 NOT NULL,
    PRIMARY KEY (mid, key)
) WITH (fillfactor = 70);

-- What became of each push per target (`mid:<mid>` or `key:<key>`): one row per state reached,
-- with the time it was first reached (states: 1 accepted, 2 stored, 3 written, 4 acked, 5 offline,
-- 6 expired).
CREATE TABLE push_receipts (
    message_id uuid NOT NULL,
    target     text COLLATE "C" NOT NULL,
    state      int2 NOT NULL CHECK (state BETWEEN 1 AND 6),
    at         int8 NOT NULL,
    PRIMARY KEY (message_id, target, state)
);
CREATE INDEX push_receipts_at ON push_receipts USING brin (at);

-- The numbering of each room with a recent push; the epoch is when its log started. Few rows (rooms
-- pushed to within room_idle_ms), so the idle sweep scans it without an index.
CREATE TABLE room_heads (
    room     text COLLATE "C" PRIMARY KEY,
    epoch    int8 NOT NULL CHECK (epoch > 0),
    head_seq int8 NOT NULL CHECK (head_seq >= 0),
    last_at  int8 NOT NULL
) WITH (fillfactor = 70);

-- Room pushes of the recent window, by number.
CREATE TABLE room_log (
    room       text COLLATE "C" NOT NULL,
    seq        int8 NOT NULL,
    message_id uuid NOT NULL,
    operation  int4 NOT NULL,
    body       bytea NOT NULL,
    created_at int8 NOT NULL,
    PRIMARY KEY (room, seq)
);
CREATE INDEX room_log_created_at ON room_log USING brin (created_at);
