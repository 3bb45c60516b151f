-- Whether nothing takes `p_exact`'s last path in `p_space`: no file at it
-- or at one of its ancestors (the rest of `p_exact`), none below it
-- (`p_lo` <= path < `p_hi`), and no upload other than `p_upload` being
-- committed to any of those. Takes the space's path turn first (the
-- advisory lock `p_lock`, the hash of `p_turn`, held until the calling
-- statement's transaction ends: what a node holds while it chooses a path
-- and records its intent), so its queries, run with a snapshot of their
-- own, see every intent recorded before. A commit's intent calls it in
-- the statement that records the intent: a path checked and claimed in
-- one round trip.
CREATE FUNCTION ferry_path_free(
  p_lock INTEGER, p_turn TEXT, p_space TEXT, p_exact TEXT[], p_lo TEXT, p_hi TEXT,
  p_upload TEXT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(p_lock, hashtext(p_turn));
  RETURN NOT EXISTS (
      SELECT 1 FROM files WHERE space = p_space
        AND (path = ANY(p_exact) OR (path >= p_lo AND path < p_hi)))
    AND NOT EXISTS (
      SELECT 1 FROM uploads u JOIN sessions s ON s.id = u.session_id
      WHERE u.state = 'committing' AND s.space = p_space AND u.id <> p_upload
        AND (u.final_path = ANY(p_exact) OR (u.final_path >= p_lo AND u.final_path < p_hi)));
END
$$;
