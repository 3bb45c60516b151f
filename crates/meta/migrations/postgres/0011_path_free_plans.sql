-- The path check keeps the plans PostgreSQL caches for it. It was
-- planned for its values at every call (`plan_cache_mode =
-- force_custom_plan` on the function, migration 7), because a plan
-- cached while the tables were young read every file once they had
-- grown; that planning, and the settings a SET clause saves and restores
-- around every call, were a fifth of PostgreSQL's CPU per small upload.
-- Its lookups now have shapes whose every plan, one cached on empty
-- tables included, reads only the keys around the path: each path of
-- `p_exact` is looked up by equality on all the columns of a unique index
-- (`files (space, path)`; an upload being committed by the partial index
-- of their final paths, its session by its id), checked as soon as its
-- lock is held, and the paths below by a range on the same indexes. (As
-- `path = ANY(p_exact)`, a young table's plan read all the space's files
-- and compared each; through a join, all the sessions.)
CREATE INDEX uploads_committing ON uploads (final_path) WHERE state = 'committing';

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
    SELECT p, hashtextextended(p_space || ':' || p, 0) AS key,
           n = cardinality(p_exact) AS own
    FROM unnest(p_exact) WITH ORDINALITY AS x(p, n)
    ORDER BY 2
  LOOP
    IF k.own THEN
      PERFORM pg_advisory_xact_lock(k.key);
    ELSE
      PERFORM pg_advisory_xact_lock_shared(k.key);
    END IF;
    IF EXISTS (SELECT 1 FROM files WHERE space = p_space AND path = k.p)
      OR EXISTS (SELECT 1 FROM uploads u
        WHERE u.state = 'committing' AND u.final_path = k.p AND u.id <> p_upload
          AND (SELECT s.space FROM sessions s WHERE s.id = u.session_id) = p_space)
    THEN
      RETURN FALSE;
    END IF;
  END LOOP;
  RETURN NOT EXISTS (SELECT 1 FROM files WHERE space = p_space AND path >= p_lo AND path < p_hi)
    AND NOT EXISTS (SELECT 1 FROM uploads u
      WHERE u.state = 'committing' AND u.final_path >= p_lo AND u.final_path < p_hi
        AND u.id <> p_upload
        AND (SELECT s.space FROM sessions s WHERE s.id = u.session_id) = p_space);
END
$$;

ALTER FUNCTION ferry_path_free(INTEGER, TEXT, TEXT, TEXT[], TEXT, TEXT, TEXT)
  RESET ALL;
