-- Path choices in one space no longer wait for each other unless their
-- paths meet. `ferry_path_free` took the space's whole path turn (one
-- lock per space: every commit in a space queued on it); it now takes
-- that turn shared (a node holding it whole, `MetaStore::turn`, still
-- excludes it) and a lock per path: shared on each ancestor of the path,
-- exclusive on the path itself. Two paths conflict exactly when one is
-- the other or one of its ancestors, and then one of them holds the
-- other's exclusive lock. The path locks are 64-bit advisory keys (the
-- `hashtextextended` of the space and the path) taken in key order, so
-- two callers never wait on each other in a cycle; held, like the turn,
-- until the calling statement's transaction ends.
CREATE OR REPLACE FUNCTION ferry_path_free(
  p_lock INTEGER, p_turn TEXT, p_space TEXT, p_exact TEXT[], p_lo TEXT, p_hi TEXT,
  p_upload TEXT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  k RECORD;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(p_lock, hashtext(p_turn));
  FOR k IN
    SELECT hashtextextended(p_space || ':' || p, 0) AS key,
           n = cardinality(p_exact) AS own
    FROM unnest(p_exact) WITH ORDINALITY AS x(p, n)
    ORDER BY 1
  LOOP
    IF k.own THEN
      PERFORM pg_advisory_xact_lock(k.key);
    ELSE
      PERFORM pg_advisory_xact_lock_shared(k.key);
    END IF;
  END LOOP;
  RETURN NOT EXISTS (
      SELECT 1 FROM files WHERE space = p_space
        AND (path = ANY(p_exact) OR (path >= p_lo AND path < p_hi)))
    AND NOT EXISTS (
      SELECT 1 FROM uploads u JOIN sessions s ON s.id = u.session_id
      WHERE u.state = 'committing' AND s.space = p_space AND u.id <> p_upload
        AND (u.final_path = ANY(p_exact) OR (u.final_path >= p_lo AND u.final_path < p_hi)));
END
$$;

-- Planned for its values at every call: a plan cached while the tables
-- were small (a new database) reads every file and upload as they grow.
ALTER FUNCTION ferry_path_free(INTEGER, TEXT, TEXT, TEXT[], TEXT, TEXT, TEXT)
  SET plan_cache_mode = force_custom_plan;
