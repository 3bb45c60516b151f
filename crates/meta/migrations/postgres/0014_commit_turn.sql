-- The claim of a session's commit (`claim_commit_turn`, one statement
-- with the read that follows it): the commit leases of the session's open
-- uploads, all or none (any lease of one, a write in flight, leaves none
-- taken: the commit then claims them one by one and is told why),
-- then the session's turn `p_key`. A refused turn takes no commit lease.
-- The uploads' keys are locked before the session's, as every claim that
-- takes both does (`claim_with_turn`), so that no two claims wait on each
-- other. Answers `ferry_claim`'s rows for the turn, with the granted
-- commit leases' uploads and tokens on a granted turn's row (empty when
-- none was granted).
CREATE FUNCTION ferry_claim_commit_turn(p_key TEXT, p_session TEXT, p_node INTEGER)
RETURNS TABLE (granted BOOLEAN, token TEXT, kind TEXT, commit_ids TEXT[], commit_tokens TEXT[])
LANGUAGE plpgsql ROWS 1 AS $$
DECLARE
  v_ids TEXT[] := '{}';
  v_tokens TEXT[] := '{}';
  v_id TEXT;
  v_token TEXT;
  v_granted BOOLEAN := false;
  r RECORD;
BEGIN
  FOR v_id IN
    SELECT u.id FROM uploads u WHERE u.session_id = p_session AND u.state = 'open' ORDER BY u.idx
  LOOP
    -- As `ferry_claim`, except that a lease in the way is left unmarked
    -- (not waited for: the commit claims it alone if it must, and says
    -- why). Marking it would lock its row before the turn's: a holder
    -- ending both in one statement could wait for this one, and this one
    -- for it.
    PERFORM pg_advisory_xact_lock(1281712499, hashtext(v_id));
    DELETE FROM leases l WHERE l.key = v_id AND NOT ferry_node_alive(l.node);
    IF EXISTS (SELECT 1 FROM leases l WHERE l.key = v_id) THEN
      DELETE FROM leases l WHERE l.token = ANY(v_tokens);
      v_ids := '{}';
      v_tokens := '{}';
      EXIT;
    END IF;
    v_token := gen_random_uuid()::text;
    INSERT INTO leases (token, key, lo, hi, kind, node)
    VALUES (v_token, v_id, 0, 9223372036854775807, 'commit', p_node);
    v_ids := v_ids || v_id;
    v_tokens := v_tokens || v_token;
  END LOOP;
  FOR r IN SELECT * FROM ferry_claim(p_key, 0, 9223372036854775807, 'turn', p_node) LOOP
    granted := r.granted;
    token := r.token;
    kind := r.kind;
    commit_ids := CASE WHEN r.granted THEN v_ids END;
    commit_tokens := CASE WHEN r.granted THEN v_tokens END;
    v_granted := v_granted OR r.granted;
    RETURN NEXT;
  END LOOP;
  IF NOT v_granted THEN
    DELETE FROM leases l WHERE l.token = ANY(v_tokens);
  END IF;
END
$$;

-- Whether a commit that claimed nothing may record its result now
-- (`commit_if_free_unclaimed`, in the result's statement): it worked from
-- what its process last knew of the upload and its session, and this
-- compares that with the records, under the keys' locks, taken as a claim
-- takes them (the upload's before the session's): no live lease of the
-- upload or of the session's turn (no write, commit, abort or expiry
-- under way elsewhere), both still open, the upload's file sealed with
-- the same digests, and the columns the file record copies unchanged;
-- for the session's whole commit, the upload its only one. The locks last
-- until the statement's end, so no claim comes between this and the
-- result. Reads with a snapshot of its own (VOLATILE), taken after them.
CREATE FUNCTION ferry_commit_ready(
  p_key TEXT, p_session TEXT, p_upload TEXT, p_whole BOOLEAN, p_sealed TEXT,
  p_metadata TEXT, p_content_type TEXT, p_dialect_state TEXT, p_expires_at BIGINT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(1281712499, hashtext(p_upload));
  PERFORM pg_advisory_xact_lock(1281712499, hashtext(p_key));
  IF EXISTS (SELECT 1 FROM leases l
             WHERE l.key IN (p_upload, p_key) AND ferry_node_alive(l.node)) THEN
    RETURN false;
  END IF;
  RETURN EXISTS (
      SELECT 1 FROM uploads u JOIN sessions s ON s.id = u.session_id
      WHERE u.id = p_upload AND s.id = p_session AND u.state = 'open' AND s.state = 'open'
        AND u.sealed = p_sealed
        AND u.metadata IS NOT DISTINCT FROM p_metadata
        AND u.content_type IS NOT DISTINCT FROM p_content_type
        AND u.dialect_state IS NOT DISTINCT FROM p_dialect_state
        AND s.expires_at = p_expires_at)
    AND NOT (p_whole AND EXISTS (
      SELECT 1 FROM uploads o WHERE o.session_id = p_session AND o.id <> p_upload));
END
$$;
