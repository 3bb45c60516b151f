-- A small upload's whole-file digests, recorded by the write that stored
-- the file whole as its final object (`Upload::sealed`; "name:hex", space
-- separated): later writes are compared with that object and never change
-- it, so a commit on any node takes these digests and reads nothing back.
-- Cleared when an upload's received bytes are forgotten.
ALTER TABLE uploads ADD COLUMN sealed TEXT;

-- An upload as Ferry reads it: its row, its ranges and parts (in order,
-- as arrays), `sealed`, and last `idx` (to order a session's uploads). The
-- one definition of that read: `UPLOAD_SELECT` (postgres.rs) reads from
-- it with a filter, the functions below after a claim. A filter on `id`
-- or `session_id` reaches the tables' indexes (the view is flattened
-- into the query that reads it).
CREATE VIEW upload_rows AS
  SELECT u.id, u.session_id, u.path, u.length, u.part_size, u.state,
    u.expected_sha256, u.content_type, u.metadata, u.final_path, u.file_id, u.whole_digests,
    u.replaces, u.dialect_state, u.direct, r.starts, r.ends,
    p.numbers, p.offsets, p.sizes, p.sha256s, p.sha1s, p.md5s, u.sealed, u.idx
  FROM uploads u
  CROSS JOIN LATERAL (SELECT array_agg(g.start ORDER BY g.start, g."end") AS starts,
      array_agg(g."end" ORDER BY g.start, g."end") AS ends
    FROM ranges g WHERE g.upload_id = u.id) r
  CROSS JOIN LATERAL (SELECT array_agg(t.number ORDER BY t.number) AS numbers,
      array_agg(t."offset" ORDER BY t.number) AS offsets,
      array_agg(t.size ORDER BY t.number) AS sizes,
      array_agg(t.sha256 ORDER BY t.number) AS sha256s,
      array_agg(t.sha1 ORDER BY t.number) AS sha1s,
      array_agg(t.md5 ORDER BY t.number) AS md5s
    FROM parts t WHERE t.upload_id = u.id) p;

-- Migration 12's reads, now of `upload_rows` (their upload columns are the
-- view's). Their answers change shape, so they are made anew.
DROP FUNCTION ferry_upload_read(TEXT);
DROP FUNCTION ferry_session_read(TEXT);

-- An upload (the view's columns) and its session (`SESSION_COLS`), read
-- with a snapshot of its own (see migration 12). No rows for a NULL id or
-- an upload that does not exist.
CREATE FUNCTION ferry_upload_read(p_id TEXT)
RETURNS TABLE (
  id TEXT, session_id TEXT, path TEXT, length BIGINT, part_size BIGINT, state TEXT,
  expected_sha256 TEXT, content_type TEXT, metadata TEXT, final_path TEXT, file_id TEXT,
  whole_digests TEXT, replaces TEXT, dialect_state TEXT, direct BOOLEAN,
  starts BIGINT[], ends BIGINT[], numbers BIGINT[], offsets BIGINT[], sizes BIGINT[],
  sha256s TEXT[], sha1s TEXT[], md5s TEXT[], sealed TEXT, idx BIGINT,
  s_id TEXT, s_owner TEXT, s_space TEXT, s_conflict TEXT, s_auto_commit BOOLEAN,
  s_state TEXT, s_created_at BIGINT, s_expires_at BIGINT, s_dialect TEXT,
  s_extend_secs BIGINT, s_open_ended BOOLEAN, s_files_expire BOOLEAN, s_failure TEXT)
LANGUAGE plpgsql VOLATILE STRICT ROWS 1 AS $$
BEGIN
  RETURN QUERY
    SELECT v.*, s.id, s.owner, s.space, s.conflict, s.auto_commit, s.state, s.created_at,
      s.expires_at, s.dialect, s.extend_secs, s.open_ended, s.files_expire, s.failure
    FROM upload_rows v JOIN sessions s ON s.id = v.session_id
    WHERE v.id = p_id;
END
$$;

-- A session (`SESSION_COLS`) with its uploads (the view's columns, oldest
-- first; NULL in the one row of a session without uploads), read as
-- `ferry_upload_read` reads. No rows for a session that does not exist.
CREATE FUNCTION ferry_session_read(p_id TEXT)
RETURNS TABLE (
  s_id TEXT, s_owner TEXT, s_space TEXT, s_conflict TEXT, s_auto_commit BOOLEAN,
  s_state TEXT, s_created_at BIGINT, s_expires_at BIGINT, s_dialect TEXT,
  s_extend_secs BIGINT, s_open_ended BOOLEAN, s_files_expire BOOLEAN, s_failure TEXT,
  id TEXT, session_id TEXT, path TEXT, length BIGINT, part_size BIGINT, state TEXT,
  expected_sha256 TEXT, content_type TEXT, metadata TEXT, final_path TEXT, file_id TEXT,
  whole_digests TEXT, replaces TEXT, dialect_state TEXT, direct BOOLEAN,
  starts BIGINT[], ends BIGINT[], numbers BIGINT[], offsets BIGINT[], sizes BIGINT[],
  sha256s TEXT[], sha1s TEXT[], md5s TEXT[], sealed TEXT, idx BIGINT)
LANGUAGE plpgsql VOLATILE STRICT ROWS 10 AS $$
BEGIN
  RETURN QUERY
    SELECT s.id, s.owner, s.space, s.conflict, s.auto_commit, s.state, s.created_at,
      s.expires_at, s.dialect, s.extend_secs, s.open_ended, s.files_expire, s.failure, v.*
    FROM sessions s LEFT JOIN upload_rows v ON v.session_id = s.id
    WHERE s.id = p_id
    ORDER BY v.idx;
END
$$;
