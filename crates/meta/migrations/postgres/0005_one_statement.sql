-- One statement per step: helpers that let a state change check its own
-- precondition inside the statement that makes it, so that the change
-- needs no transaction of its own (BEGIN, lock, change, COMMIT) and costs
-- one round trip. A statement that calls them and fails is undone whole.

-- Fails the calling statement unless `ok`: a compare-and-set whose rows
-- were not in the states it expected (SQLSTATE FY001). The caller then
-- takes the locking path, which reads the states and says what is wrong.
CREATE FUNCTION ferry_expect(ok BOOLEAN) RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF ok IS NOT TRUE THEN
    RAISE EXCEPTION 'ferry: the states changed' USING ERRCODE = 'FY001';
  END IF;
  RETURN TRUE;
END
$$;

-- A creation's limits for `p_owner`, checked in the statement that inserts
-- its sessions (`p_new`, left out of the counts): takes the owner's turn
-- (advisory lock 1333227122 = "Ownr", the owner's hash; held until the
-- statement's transaction ends) and then counts. A VOLATILE function's
-- queries take a snapshot of their own, after the turn: they see what the
-- previous holder committed. Over a limit, fails (SQLSTATE FY002) with
-- the figures in its message: "sessions <open>" or "quota <used>".
CREATE FUNCTION ferry_owner_limits(
  p_owner TEXT, p_new TEXT[], p_sessions BIGINT, p_max_open BIGINT,
  p_more BIGINT, p_quota BIGINT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_open BIGINT;
  v_used BIGINT;
BEGIN
  PERFORM pg_advisory_xact_lock(1333227122, hashtext(p_owner));
  SELECT COUNT(*) INTO v_open FROM sessions
  WHERE owner = p_owner AND state IN ('open', 'committing') AND id <> ALL(p_new);
  IF v_open + p_sessions > p_max_open THEN
    RAISE EXCEPTION 'sessions %', v_open USING ERRCODE = 'FY002';
  END IF;
  IF p_quota IS NOT NULL THEN
    SELECT (SELECT COALESCE(SUM(size), 0) FROM files WHERE owner = p_owner)
         + (SELECT COALESCE(SUM(u.length), 0) FROM uploads u
            JOIN sessions s ON s.id = u.session_id
            WHERE s.owner = p_owner AND s.id <> ALL(p_new)
              AND s.state IN ('open', 'committing') AND u.state IN ('open', 'committing'))
      INTO v_used;
    IF v_used + p_more > p_quota THEN
      RAISE EXCEPTION 'quota %', v_used USING ERRCODE = 'FY002';
    END IF;
  END IF;
  RETURN TRUE;
END
$$;

-- Ends session `p_session` if the change in hand settles it — the core's
-- rule (`SessionState::settled`): an open session that is not open-ended,
-- with uploads, none of them open or committing once `p_ids` have the
-- states `p_states`, ends committed if one of them is committed or
-- skipped, else aborted. Locks the session row first (the locking path's
-- order) and reads its uploads afterwards, with a snapshot of its own: a
-- commit of another upload of the session that got the lock before it is
-- seen. Answers the state it set, or NULL.
CREATE FUNCTION ferry_settle(p_session TEXT, p_ids TEXT[], p_states TEXT[])
RETURNS TEXT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_state TEXT;
  v_open_ended BOOLEAN;
  v_any BOOLEAN;
  v_pending BOOLEAN;
  v_done BOOLEAN;
  v_to TEXT;
BEGIN
  IF p_session IS NULL THEN
    RETURN NULL;
  END IF;
  SELECT state, open_ended INTO v_state, v_open_ended
  FROM sessions WHERE id = p_session FOR UPDATE;
  IF NOT FOUND OR v_state <> 'open' OR v_open_ended THEN
    RETURN NULL;
  END IF;
  SELECT COUNT(*) > 0,
         COALESCE(bool_or(st IN ('open', 'committing')), FALSE),
         COALESCE(bool_or(st IN ('committed', 'skipped')), FALSE)
    INTO v_any, v_pending, v_done
  FROM (SELECT COALESCE(n.state, u.state) AS st
        FROM uploads u LEFT JOIN UNNEST(p_ids, p_states) AS n(id, state) ON n.id = u.id
        WHERE u.session_id = p_session) x;
  IF NOT v_any OR v_pending THEN
    RETURN NULL;
  END IF;
  v_to := CASE WHEN v_done THEN 'committed' ELSE 'aborted' END;
  UPDATE sessions SET state = v_to WHERE id = p_session;
  RETURN v_to;
END
$$;
