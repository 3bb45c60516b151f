-- The record of a write that claimed nothing (`record_write_if_free`): a
-- small upload's whole file (a part, or an append from its first byte:
-- `p_number` NULL), stored as its final object only if no object was
-- there, by the node that made the upload.
--
-- A claim of an upload leaves a mark on it (`claimed`), which stays: a
-- request that claimed the upload may have written over the object, or
-- removed it when its own write failed, whether it still holds its lease
-- or not. Such a write is then never recorded without a claim.
-- Uploads made before this migration may have been claimed by nodes that
-- left no mark: they count as claimed.
ALTER TABLE uploads ADD COLUMN claimed BOOLEAN NOT NULL DEFAULT true;
ALTER TABLE uploads ALTER COLUMN claimed SET DEFAULT false;

-- As migration 8, and a granted claim marks the upload whose id is its
-- key (a turn's key names no upload: nothing is marked).
CREATE OR REPLACE FUNCTION ferry_claim(p_key TEXT, p_lo BIGINT, p_hi BIGINT, p_kind TEXT, p_node INTEGER)
RETURNS TABLE (granted BOOLEAN, token TEXT, kind TEXT)
LANGUAGE plpgsql ROWS 1 AS $$
DECLARE
  v_token TEXT;
BEGIN
  PERFORM pg_advisory_xact_lock(1281712499, hashtext(p_key));
  DELETE FROM leases l
  WHERE l.key = p_key AND l.lo < p_hi AND l.hi > p_lo AND NOT ferry_node_alive(l.node);
  RETURN QUERY
    UPDATE leases l SET waited = true
    WHERE l.key = p_key AND l.lo < p_hi AND l.hi > p_lo
    RETURNING false, l.token, l.kind;
  IF FOUND THEN
    RETURN;
  END IF;
  v_token := gen_random_uuid()::text;
  INSERT INTO leases (token, key, lo, hi, kind, node)
  VALUES (v_token, p_key, p_lo, p_hi, p_kind, p_node);
  UPDATE uploads SET claimed = true WHERE id = p_key AND NOT claimed;
  RETURN QUERY SELECT true, v_token, p_kind;
END
$$;

-- Records the write only if nothing holds or changed the upload since it
-- was made: never claimed (see above), no lease of it, open in an open
-- session, not written directly (presigned), nothing received and
-- nothing sealed. Under the lock a claim of the upload takes, only tried
-- (a claim under way answers false at once, and the write claims the
-- usual way, which waits): no claim comes between the checks and the
-- record. The conditions are those of the UPDATE, which locks the
-- upload's row and checks the row's own again once an abort, expiry,
-- failure or commit that changed it meanwhile is in (READ COMMITTED; the
-- subqueries keep the statement's snapshot: each of those changes the
-- upload's row too, and ranges and parts are recorded only under a
-- claim): one of them goes first, whole.
CREATE FUNCTION ferry_record_if_free(
  p_upload TEXT, p_start BIGINT, p_end BIGINT, p_number BIGINT, p_offset BIGINT,
  p_size BIGINT, p_sha256 TEXT, p_sha1 TEXT, p_md5 TEXT, p_sealed TEXT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF NOT pg_try_advisory_xact_lock(1281712499, hashtext(p_upload)) THEN
    RETURN FALSE;
  END IF;
  UPDATE uploads u SET sealed = p_sealed
  WHERE u.id = p_upload AND u.state = 'open' AND NOT u.claimed AND NOT u.direct
    AND u.sealed IS NULL
    AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = u.session_id AND s.state = 'open')
    AND NOT EXISTS (SELECT 1 FROM leases WHERE key = p_upload)
    AND NOT EXISTS (SELECT 1 FROM ranges WHERE upload_id = p_upload)
    AND NOT EXISTS (SELECT 1 FROM parts WHERE upload_id = p_upload);
  IF NOT FOUND THEN
    RETURN FALSE;
  END IF;
  INSERT INTO ranges (upload_id, start, "end") VALUES (p_upload, p_start, p_end);
  IF p_number IS NOT NULL THEN
    INSERT INTO parts (upload_id, number, "offset", size, sha256, sha1, md5)
    VALUES (p_upload, p_number, p_offset, p_size, p_sha256, p_sha1, p_md5);
  END IF;
  RETURN TRUE;
END
$$;
