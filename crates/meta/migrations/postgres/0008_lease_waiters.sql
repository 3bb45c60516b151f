-- A lease's end is announced only when someone waits for it. A `NOTIFY`
-- takes one lock for the whole PostgreSQL server while its transaction
-- commits, so announcing every release (a one-request upload's turn ends
-- with its commit) queued every commit of every node behind each other.
-- A claim that finds its key busy marks the leases in its way `waited`,
-- in the statement that finds them; a release announces the leases it
-- ended that were marked. The mark is an UPDATE: a release that removed
-- a lease first (its row gone) leaves it out of the answer, so a claimer
-- never waits for an announcement that was not to come.
ALTER TABLE leases ADD COLUMN waited BOOLEAN NOT NULL DEFAULT false;

CREATE OR REPLACE FUNCTION ferry_claim(p_key TEXT, p_lo BIGINT, p_hi BIGINT, p_kind TEXT, p_node INTEGER)
RETURNS TABLE (granted BOOLEAN, token TEXT, kind TEXT)
LANGUAGE plpgsql AS $$
DECLARE
  v_token TEXT;
BEGIN
  PERFORM pg_advisory_xact_lock(1281712499, hashtext(p_key));
  DELETE FROM leases l
  WHERE l.key = p_key AND l.lo < p_hi AND l.hi > p_lo AND NOT ferry_node_alive(l.node);
  RETURN QUERY
    UPDATE leases l SET waited = true
    WHERE l.key = p_key AND l.lo < p_hi AND l.hi > p_lo
    RETURNING false, l.token, l.kind;
  IF FOUND THEN
    RETURN;
  END IF;
  v_token := gen_random_uuid()::text;
  INSERT INTO leases (token, key, lo, hi, kind, node)
  VALUES (v_token, p_key, p_lo, p_hi, p_kind, p_node);
  RETURN QUERY SELECT true, v_token, p_kind;
END
$$;
