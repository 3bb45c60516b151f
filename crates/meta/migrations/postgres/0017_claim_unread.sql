-- The claim of an append sent to a node that keeps no slot of its upload
-- (`claim_unread_append`): made in the statement that reads the upload,
-- so that the node reads it once. Its request is not authorized yet (the
-- read says whose the upload is), so it must disturb nobody: it is
-- granted only when no live lease overlaps it, and a lease in its way is
-- not marked waited for (nobody is asked to let go); the node then reads
-- and claims the usual way. Otherwise as `ferry_claim` (migration 16): a
-- dead node's leases are taken over, and a grant marks the upload
-- claimed.
CREATE FUNCTION ferry_claim_free(p_key TEXT, p_lo BIGINT, p_hi BIGINT, p_kind TEXT, p_node INTEGER)
RETURNS TABLE (granted BOOLEAN, token TEXT, kind TEXT)
LANGUAGE plpgsql ROWS 1 AS $$
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
  UPDATE uploads SET claimed = true WHERE id = p_key AND NOT claimed;
  RETURN QUERY SELECT true, v_token, p_kind;
END
$$;
