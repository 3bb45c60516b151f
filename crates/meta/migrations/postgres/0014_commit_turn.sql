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
