-- The control plane's node-token signing keys (Ed25519), shared by every control instance.
--
-- `generation` orders rotations and is unique, so instances that start together or rotate
-- together agree on one key per generation (the loser of an insert race reads the winner's key).
-- Control signs with the highest generation and verifies with all; old generations are deleted
-- once no token they signed can still be valid.
CREATE TABLE node_signing_keys (
    generation  int8 PRIMARY KEY CHECK (generation > 0),
    kid         text COLLATE "C" NOT NULL UNIQUE,
    private_key bytea NOT NULL,
    public_key  bytea NOT NULL,
    created_at  int8 NOT NULL
);
