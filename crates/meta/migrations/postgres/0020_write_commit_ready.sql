-- A tus or IETF-draft upload of one small file in one request needed
-- three statements: its creation, the record of its write
-- (`ferry_record_if_free`, migration 16) and its commit
-- (`ferry_commit_ready`, migration 15). Its write and its commit are now
-- one: `commit_if_free_unclaimed` with a gate whose write is recorded with
-- the result checks this instead of `ferry_commit_ready`.
--
-- The conditions are both functions' at once, under the same locks, only
-- tried (a claim under way answers false at once, and the write is
-- recorded, then committed, the usual way): no lease of the upload at all,
-- even a dead node's (its request may have written over the object or
-- removed it), and no live lease of the session's turn; never claimed
-- since it was made (`claimed`, migration 16); both still open; not
-- written directly; nothing received, sealed or numbered as a part; the
-- columns the file record copies unchanged; for the session's whole
-- commit, the upload its only one. The result's statement then sets the
-- write's sealed digests with the upload's final state, and checks
-- `NOT claimed AND sealed IS NULL` again on the row it updates (a change
-- that came in meanwhile is seen there).
CREATE FUNCTION ferry_write_commit_ready(
  p_key TEXT, p_session TEXT, p_upload TEXT, p_whole BOOLEAN,
  p_metadata TEXT, p_content_type TEXT, p_dialect_state TEXT, p_expires_at BIGINT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF NOT pg_try_advisory_xact_lock(1281712499, hashtext(p_upload))
     OR NOT pg_try_advisory_xact_lock(1281712499, hashtext(p_key)) THEN
    RETURN false;
  END IF;
  IF EXISTS (SELECT 1 FROM leases l
             WHERE l.key = p_upload OR (l.key = p_key AND ferry_node_alive(l.node))) THEN
    RETURN false;
  END IF;
  RETURN EXISTS (
      SELECT 1 FROM uploads u JOIN sessions s ON s.id = u.session_id
      WHERE u.id = p_upload AND s.id = p_session AND u.state = 'open' AND s.state = 'open'
        AND NOT u.claimed AND NOT u.direct AND u.sealed IS NULL
        AND u.metadata IS NOT DISTINCT FROM p_metadata
        AND u.content_type IS NOT DISTINCT FROM p_content_type
        AND u.dialect_state IS NOT DISTINCT FROM p_dialect_state
        AND s.expires_at = p_expires_at)
    AND NOT EXISTS (SELECT 1 FROM ranges WHERE upload_id = p_upload)
    AND NOT EXISTS (SELECT 1 FROM parts WHERE upload_id = p_upload)
    AND NOT (p_whole AND EXISTS (
      SELECT 1 FROM uploads o WHERE o.session_id = p_session AND o.id <> p_upload));
END
$$;
