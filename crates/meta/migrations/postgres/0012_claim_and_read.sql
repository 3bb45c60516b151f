-- An upload with its ranges, parts and session, read with a snapshot of
-- its own (a VOLATILE function's query takes one when it starts): called
-- after a claim in the claim's statement (`claim_and_read`), it sees what
-- the lease's previous holder recorded before letting go, which the
-- statement's own snapshot, taken before the claim, could miss. The one
-- definition of that read (`upload_and_session` calls it too); its
-- columns are the upload's (as `UPLOAD_SELECT` in postgres.rs answers
-- them) then the session's (`SESSION_COLS`). No rows for a NULL id
-- (STRICT: not even called) or an upload that does not exist.
CREATE FUNCTION ferry_upload_read(p_id TEXT)
RETURNS TABLE (
  id TEXT, session_id TEXT, path TEXT, length BIGINT, part_size BIGINT, state TEXT,
  expected_sha256 TEXT, content_type TEXT, metadata TEXT, final_path TEXT, file_id TEXT,
  whole_digests TEXT, replaces TEXT, dialect_state TEXT, direct BOOLEAN,
  starts BIGINT[], ends BIGINT[], numbers BIGINT[], offsets BIGINT[], sizes BIGINT[],
  sha256s TEXT[], sha1s TEXT[], md5s TEXT[],
  s_id TEXT, s_owner TEXT, s_space TEXT, s_conflict TEXT, s_auto_commit BOOLEAN,
  s_state TEXT, s_created_at BIGINT, s_expires_at BIGINT, s_dialect TEXT,
  s_extend_secs BIGINT, s_open_ended BOOLEAN, s_files_expire BOOLEAN, s_failure TEXT)
LANGUAGE plpgsql VOLATILE STRICT AS $$
BEGIN
  RETURN QUERY
    SELECT u.id, u.session_id, u.path, u.length, u.part_size, u.state,
      u.expected_sha256, u.content_type, u.metadata, u.final_path, u.file_id, u.whole_digests,
      u.replaces, u.dialect_state, u.direct, r.starts, r.ends,
      p.numbers, p.offsets, p.sizes, p.sha256s, p.sha1s, p.md5s,
      s.id, s.owner, s.space, s.conflict, s.auto_commit, s.state, s.created_at,
      s.expires_at, s.dialect, s.extend_secs, s.open_ended, s.files_expire, s.failure
    FROM uploads u
    JOIN sessions s ON s.id = u.session_id
    CROSS JOIN LATERAL (SELECT array_agg(g.start ORDER BY g.start, g."end") AS starts,
        array_agg(g."end" ORDER BY g.start, g."end") AS ends
      FROM ranges g WHERE g.upload_id = u.id) r
    CROSS JOIN LATERAL (SELECT array_agg(t.number ORDER BY t.number) AS numbers,
        array_agg(t."offset" ORDER BY t.number) AS offsets,
        array_agg(t.size ORDER BY t.number) AS sizes,
        array_agg(t.sha256 ORDER BY t.number) AS sha256s,
        array_agg(t.sha1 ORDER BY t.number) AS sha1s,
        array_agg(t.md5 ORDER BY t.number) AS md5s
      FROM parts t WHERE t.upload_id = u.id) p
    WHERE u.id = p_id;
END
$$;

-- The states of an upload and its session, read as `ferry_upload_read`
-- reads (after a claim, in its statement): all a part's or a range's
-- claim needs to know (whether the upload was committed meanwhile),
-- without reading its ranges and parts under the claim's lock.
CREATE FUNCTION ferry_upload_state(p_id TEXT)
RETURNS TABLE (state TEXT, session_state TEXT)
LANGUAGE plpgsql VOLATILE STRICT AS $$
BEGIN
  RETURN QUERY
    SELECT u.state, s.state FROM uploads u JOIN sessions s ON s.id = u.session_id
    WHERE u.id = p_id;
END
$$;

-- A session with its uploads (oldest first), read as `ferry_upload_read`
-- reads (after the claim of the session's turn, in its statement): the
-- session's columns (`SESSION_COLS`), then each upload's (as
-- `UPLOAD_SELECT` answers them; NULL in the one row of a session without
-- uploads). No rows for a session that does not exist.
CREATE FUNCTION ferry_session_read(p_id TEXT)
RETURNS TABLE (
  s_id TEXT, s_owner TEXT, s_space TEXT, s_conflict TEXT, s_auto_commit BOOLEAN,
  s_state TEXT, s_created_at BIGINT, s_expires_at BIGINT, s_dialect TEXT,
  s_extend_secs BIGINT, s_open_ended BOOLEAN, s_files_expire BOOLEAN, s_failure TEXT,
  id TEXT, session_id TEXT, path TEXT, length BIGINT, part_size BIGINT, state TEXT,
  expected_sha256 TEXT, content_type TEXT, metadata TEXT, final_path TEXT, file_id TEXT,
  whole_digests TEXT, replaces TEXT, dialect_state TEXT, direct BOOLEAN,
  starts BIGINT[], ends BIGINT[], numbers BIGINT[], offsets BIGINT[], sizes BIGINT[],
  sha256s TEXT[], sha1s TEXT[], md5s TEXT[])
LANGUAGE plpgsql VOLATILE STRICT AS $$
BEGIN
  RETURN QUERY
    SELECT s.id, s.owner, s.space, s.conflict, s.auto_commit, s.state, s.created_at,
      s.expires_at, s.dialect, s.extend_secs, s.open_ended, s.files_expire, s.failure,
      u.id, u.session_id, u.path, u.length, u.part_size, u.state,
      u.expected_sha256, u.content_type, u.metadata, u.final_path, u.file_id, u.whole_digests,
      u.replaces, u.dialect_state, u.direct, r.starts, r.ends,
      p.numbers, p.offsets, p.sizes, p.sha256s, p.sha1s, p.md5s
    FROM sessions s
    LEFT JOIN uploads u ON u.session_id = s.id
    LEFT JOIN LATERAL (SELECT array_agg(g.start ORDER BY g.start, g."end") AS starts,
        array_agg(g."end" ORDER BY g.start, g."end") AS ends
      FROM ranges g WHERE g.upload_id = u.id) r ON TRUE
    LEFT JOIN LATERAL (SELECT array_agg(t.number ORDER BY t.number) AS numbers,
        array_agg(t."offset" ORDER BY t.number) AS offsets,
        array_agg(t.size ORDER BY t.number) AS sizes,
        array_agg(t.sha256 ORDER BY t.number) AS sha256s,
        array_agg(t.sha1 ORDER BY t.number) AS sha1s,
        array_agg(t.md5 ORDER BY t.number) AS md5s
      FROM parts t WHERE t.upload_id = u.id) p ON TRUE
    WHERE s.id = p_id
    ORDER BY u.idx;
END
$$;

-- What the functions a claim's statement joins answer, for the planner
-- (which cannot see into them and guesses 1,000 rows each: a claim, its
-- read and their sort then looked costly enough to be compiled, JIT, at
-- every execution).
ALTER FUNCTION ferry_claim(TEXT, BIGINT, BIGINT, TEXT, INTEGER) ROWS 1;
ALTER FUNCTION ferry_upload_read(TEXT) ROWS 1;
ALTER FUNCTION ferry_upload_state(TEXT) ROWS 1;
ALTER FUNCTION ferry_session_read(TEXT) ROWS 10;
