-- Creations of one owner that are far below its open-sessions limit no
-- longer wait for each other.
--
-- `ferry_owner_limits` took the owner's lock exclusively, and a
-- transaction keeps an advisory lock until it ends: every creation of an
-- owner waited for the one before it to commit, its WAL flush included.
-- One busy owner (an application's one account) was a queue across the
-- whole cluster: on a durable server a creation's mean time was 4.4 ms,
-- most of it that wait, against 0.7 ms for a commit.
--
-- Now a creation of one session, with no quota to sum, whose owner has at
-- least `K` = 16 open sessions to spare (counted before any lock) takes
-- one of the owner's 16 stripes (advisory lock 1332966514 = "Ostr", keys
-- `hashtext(owner) & 0x7FFFFFF0` + 0..15, the first free one from a random
-- start, else waits for one) and the owner's lock *shared*. Under them it
-- counts again: at most 15 other creations are in flight unseen (each
-- holds another stripe until it ends, and adds one session), so with
-- `open + 16 <= max` the limit holds whatever they do. Every other
-- creation (several sessions, a quota, near the limit) takes the owner's
-- lock exclusively as before: it waits for every stripe holder to end
-- (they hold the lock shared) and counts exactly.
--
-- The count under the stripe can find the owner nearer its limit than the
-- first one did (creations committed in between). It cannot wait for the
-- others then (they may wait for it the same way); it tries every stripe
-- of the owner without waiting, and counts again: each stripe it could
-- not take has at most one creation in flight unseen (one that ended
-- before the count is counted), each one it took none, so it is refused
-- when the open sessions, those stripes and itself pass the limit. That
-- may refuse a creation that would have fitted (some of those in flight
-- fail, or another owner shares the stripes' keys), never let one pass.
--
-- Two calls for one owner in one transaction could wait for each other
-- (shared, then whole); a creation is one statement and calls it once.
CREATE OR REPLACE FUNCTION ferry_owner_limits(
  p_owner TEXT, p_new TEXT[], p_sessions BIGINT, p_max_open BIGINT,
  p_more BIGINT, p_quota BIGINT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  k CONSTANT INTEGER := 16;
  v_key INTEGER := hashtext(p_owner);
  v_base INTEGER := v_key & 2147483632;
  v_start INTEGER;
  v_taken BOOLEAN := FALSE;
  v_open BIGINT;
  v_used BIGINT;
  v_flying BIGINT := 0;
BEGIN
  IF p_quota IS NULL AND p_sessions = 1 THEN
    SELECT COUNT(*) INTO v_open FROM sessions
    WHERE owner = p_owner AND state IN ('open', 'committing') AND id <> ALL(p_new);
    IF v_open + k <= p_max_open THEN
      v_start := floor(random() * k)::INTEGER;
      FOR i IN 0 .. k - 1 LOOP
        IF pg_try_advisory_xact_lock(1332966514, v_base + (v_start + i) % k) THEN
          v_taken := TRUE;
          EXIT;
        END IF;
      END LOOP;
      IF NOT v_taken THEN
        PERFORM pg_advisory_xact_lock(1332966514, v_base + v_start);
      END IF;
      PERFORM pg_advisory_xact_lock_shared(1333227122, v_key);
      SELECT COUNT(*) INTO v_open FROM sessions
      WHERE owner = p_owner AND state IN ('open', 'committing') AND id <> ALL(p_new);
      IF v_open + k <= p_max_open THEN
        RETURN TRUE;
      END IF;
      FOR i IN 0 .. k - 1 LOOP
        IF NOT pg_try_advisory_xact_lock(1332966514, v_base + i) THEN
          v_flying := v_flying + 1;
        END IF;
      END LOOP;
      SELECT COUNT(*) INTO v_open FROM sessions
      WHERE owner = p_owner AND state IN ('open', 'committing') AND id <> ALL(p_new);
      IF v_open + v_flying + 1 > p_max_open THEN
        RAISE EXCEPTION 'sessions %', v_open + v_flying USING ERRCODE = 'FY002';
      END IF;
      RETURN TRUE;
    END IF;
  END IF;
  PERFORM pg_advisory_xact_lock(1333227122, v_key);
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
