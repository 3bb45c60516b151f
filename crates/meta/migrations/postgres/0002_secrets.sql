-- Secrets every node shares (the key that signs URLs), stored once by the
-- first node that starts.
CREATE TABLE secrets (
  name TEXT PRIMARY KEY,
  value BYTEA NOT NULL
);
