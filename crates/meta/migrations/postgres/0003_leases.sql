-- Leases: what one node is doing to a key (an upload's byte range, a
-- session's commit, a namespace's path choice) while it does it, so that
-- other nodes wait, ask it to let go, or refuse, as the engine decides.
-- A lease belongs to a node while that node lives: every node holds the
-- advisory lock (1315923045 = "Node", its id) on a connection of its own,
-- which PostgreSQL releases when the node dies; a lease whose node holds
-- no such lock is nobody's.
CREATE TABLE leases (
  token TEXT PRIMARY KEY,
  key TEXT NOT NULL,
  lo BIGINT NOT NULL,
  hi BIGINT NOT NULL,
  kind TEXT NOT NULL,
  node INTEGER NOT NULL,
  since TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX leases_key ON leases (key);

-- Whether the node `id` is alive (holds its advisory lock in this database).
CREATE FUNCTION ferry_node_alive(id INTEGER) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
  SELECT EXISTS (
    SELECT 1 FROM pg_locks k
    WHERE k.locktype = 'advisory'
      AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND k.classid = 1315923045::oid AND k.objid = id::oid AND k.objsubid = 2
      AND k.granted)
$$;

-- Claims [lo, hi) of `key` for node `node`, unless a lease of a live node
-- overlaps it. Answers one row (granted, its token) or the overlapping
-- leases (not granted). Claims of one key are serialized by a transaction
-- lock ("Leas", the key's hash); leases of dead nodes are removed on the way.
CREATE FUNCTION ferry_claim(p_key TEXT, p_lo BIGINT, p_hi BIGINT, p_kind TEXT, p_node INTEGER)
RETURNS TABLE (granted BOOLEAN, token TEXT, kind TEXT)
LANGUAGE plpgsql AS $$
DECLARE
  v_token TEXT;
BEGIN
  PERFORM pg_advisory_xact_lock(1281712499, hashtext(p_key));
  DELETE FROM leases l
  WHERE l.key = p_key AND l.lo < p_hi AND l.hi > p_lo AND NOT ferry_node_alive(l.node);
  RETURN QUERY
    SELECT false, l.token, l.kind FROM leases l
    WHERE l.key = p_key AND l.lo < p_hi AND l.hi > p_lo;
  IF FOUND THEN
    RETURN;
  END IF;
  v_token := gen_random_uuid()::text;
  INSERT INTO leases (token, key, lo, hi, kind, node)
  VALUES (v_token, p_key, p_lo, p_hi, p_kind, p_node);
  RETURN QUERY SELECT true, v_token, p_kind;
END
$$;
