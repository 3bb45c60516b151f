-- Whether a commit that claimed nothing may record its result now
-- (`commit_if_free_unclaimed`, in the result's statement): it worked from
-- what its process last knew of the upload and its session, and this
-- compares that with the records, under the keys' locks, taken as a claim
-- takes them (the upload's before the session's): no live lease of the
-- upload or of the session's turn (no write, commit, abort or expiry
-- under way elsewhere), both still open, the upload's file sealed with
-- the same digests, not written directly (presigned), and the columns
-- the file record copies unchanged; for the session's whole commit, the
-- upload its only one. A lock another transaction holds (a claim under
-- way) answers false at once: the commit claims the usual way, which
-- waits. The locks last until the statement's end, so no claim comes
-- between this and the result. Reads with a snapshot of its own
-- (VOLATILE), taken after them.
CREATE FUNCTION ferry_commit_ready(
  p_key TEXT, p_session TEXT, p_upload TEXT, p_whole BOOLEAN, p_sealed TEXT,
  p_metadata TEXT, p_content_type TEXT, p_dialect_state TEXT, p_expires_at BIGINT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF NOT pg_try_advisory_xact_lock(1281712499, hashtext(p_upload))
     OR NOT pg_try_advisory_xact_lock(1281712499, hashtext(p_key)) THEN
    RETURN false;
  END IF;
  IF EXISTS (SELECT 1 FROM leases l
             WHERE l.key IN (p_upload, p_key) AND ferry_node_alive(l.node)) THEN
    RETURN false;
  END IF;
  RETURN EXISTS (
      SELECT 1 FROM uploads u JOIN sessions s ON s.id = u.session_id
      WHERE u.id = p_upload AND s.id = p_session AND u.state = 'open' AND s.state = 'open'
        AND u.sealed = p_sealed AND NOT u.direct
        AND u.metadata IS NOT DISTINCT FROM p_metadata
        AND u.content_type IS NOT DISTINCT FROM p_content_type
        AND u.dialect_state IS NOT DISTINCT FROM p_dialect_state
        AND s.expires_at = p_expires_at)
    AND NOT (p_whole AND EXISTS (
      SELECT 1 FROM uploads o WHERE o.session_id = p_session AND o.id <> p_upload));
END
$$;

-- Deletes an upload's ranges with a snapshot taken now (VOLATILE): in the
-- statement of a commit that claimed nothing, after `ferry_commit_ready`
-- took its locks, it sees a range a resend recorded since the statement
-- began. Answers how many went.
CREATE FUNCTION ferry_delete_ranges(p_upload TEXT)
RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_gone BIGINT;
BEGIN
  DELETE FROM ranges g WHERE g.upload_id = p_upload;
  GET DIAGNOSTICS v_gone = ROW_COUNT;
  RETURN v_gone;
END
$$;
