-- A dead node's leases are taken over only once none of its statements
-- can still land.
--
-- A node is dead when the connection holding its presence lock ends
-- (migration 3). PostgreSQL ends an idle connection as soon as its client
-- is gone, but a statement under way runs to its end first, and commits.
-- Before this migration, another node could take over a lease of a node
-- killed mid-statement, read the records, and only then see that
-- statement land: a commit taken over found its own upload `committing`
-- toward its path, and refused the path as taken.
--
-- Every connection of a node's pool holds, from its start, the advisory
-- lock (1181052515 = "Fenc", the node's id) shared. A lease is taken over
-- (`ferry_take_over`, in every claim, and the sweep of dead leases) only
-- after `ferry_fence` has ended every backend still holding its node's
-- fence lock and seen it gone: a statement under way is then either in
-- (committed before) or rolled back. A connection is made only while
-- its node is present. A node whose presence lapsed while it lived comes
-- back under a new id and ends its connections of the old one itself.
-- Start-up recovery fences every dead node first (`ferry_fence_dead`).
-- (A space's turn, a transaction lock, needs no fence: the intent
-- recorded under it is recorded in its transaction, and goes with it.)

-- The backends holding node `p_node`'s fence lock, but this one.
CREATE FUNCTION ferry_fence_holders(p_node INTEGER) RETURNS SETOF INTEGER
LANGUAGE sql VOLATILE AS $$
  SELECT k.pid FROM pg_locks k
  WHERE k.locktype = 'advisory'
    AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND k.classid = 1181052515::oid AND k.objid = p_node::oid AND k.objsubid = 2
    AND k.pid <> pg_backend_pid()
$$;

-- Ends the backends of node `p_node` (the holders of its fence lock):
-- signals them all, then waits up to 2 s for them to be gone. Whether
-- none is left. All nodes must connect as one role (or as members of
-- `pg_signal_backend`): a backend that may not be ended is left, and its
-- node's leases with it. Either failure is a WARNING, which the node
-- whose statement met it logs too (sqlx relays notices).
CREATE FUNCTION ferry_fence(p_node INTEGER) RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_pid INTEGER;
BEGIN
  FOR v_pid IN SELECT * FROM ferry_fence_holders(p_node) LOOP
    BEGIN
      PERFORM pg_terminate_backend(v_pid);
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE WARNING 'ferry: cannot end backend % of dead node %: connect every node as one role', v_pid, p_node;
      RETURN false;
    END;
  END LOOP;
  FOR i IN 1..200 LOOP
    IF NOT EXISTS (SELECT FROM ferry_fence_holders(p_node)) THEN
      RETURN true;
    END IF;
    PERFORM pg_sleep(0.01);
  END LOOP;
  RAISE WARNING 'ferry: backends of dead node % did not end within 2 s; its leases stay', p_node;
  RETURN false;
END
$$;

-- The nodes that have connections but no presence (in one read of the
-- lock table).
CREATE FUNCTION ferry_dead_nodes() RETURNS SETOF INTEGER
LANGUAGE sql VOLATILE AS $$
  WITH k AS MATERIALIZED (
    SELECT k.classid, k.objid FROM pg_locks k
    WHERE k.locktype = 'advisory' AND k.objsubid = 2 AND k.granted
      AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
  SELECT DISTINCT f.objid::integer FROM k f
  WHERE f.classid = 1181052515::oid
    AND NOT EXISTS (SELECT FROM k p WHERE p.classid = 1315923045::oid AND p.objid = f.objid)
$$;

-- Removes the leases of dead nodes overlapping [p_lo, p_hi) of `p_key`,
-- each dead node fenced first (`ferry_fence`); a node that could not be
-- fenced keeps its leases (a claim finds them held, and tries again).
-- The caller holds the key's claim lock.
CREATE FUNCTION ferry_take_over(p_key TEXT, p_lo BIGINT, p_hi BIGINT) RETURNS VOID
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_node INTEGER;
BEGIN
  FOR v_node IN
    SELECT DISTINCT l.node FROM leases l
    WHERE l.key = p_key AND l.lo < p_hi AND l.hi > p_lo AND NOT ferry_node_alive(l.node)
  LOOP
    IF ferry_fence(v_node) THEN
      DELETE FROM leases l
      WHERE l.key = p_key AND l.lo < p_hi AND l.hi > p_lo AND l.node = v_node;
    END IF;
  END LOOP;
END
$$;

-- The sweep of dead nodes' leases (`forget_dead_leases`): each dead node
-- (one read of the lock table) fenced first. Rows a claim is removing
-- meanwhile are left to it (SKIP LOCKED: locking them in another order
-- than the claims', which go key by key, could deadlock with a claim of
-- several keys). How many went.
CREATE FUNCTION ferry_forget_dead_leases() RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_node INTEGER;
  v_gone BIGINT := 0;
  v_n BIGINT;
BEGIN
  FOR v_node IN
    WITH alive AS MATERIALIZED (
      SELECT k.objid FROM pg_locks k
      WHERE k.locktype = 'advisory' AND k.classid = 1315923045::oid AND k.objsubid = 2
        AND k.granted
        AND k.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
    SELECT DISTINCT l.node FROM leases l WHERE l.node::oid NOT IN (SELECT objid FROM alive)
  LOOP
    IF ferry_fence(v_node) THEN
      DELETE FROM leases WHERE token IN (
        SELECT token FROM leases WHERE node = v_node FOR UPDATE SKIP LOCKED);
      GET DIAGNOSTICS v_n = ROW_COUNT;
      v_gone := v_gone + v_n;
    END IF;
  END LOOP;
  RETURN v_gone;
END
$$;

-- The claims of migrations 16, 17 and 14, taking over through
-- `ferry_take_over`; otherwise unchanged.
CREATE OR REPLACE FUNCTION ferry_claim(p_key TEXT, p_lo BIGINT, p_hi BIGINT, p_kind TEXT, p_node INTEGER)
RETURNS TABLE (granted BOOLEAN, token TEXT, kind TEXT)
LANGUAGE plpgsql ROWS 1 AS $$
DECLARE
  v_token TEXT;
BEGIN
  PERFORM pg_advisory_xact_lock(1281712499, hashtext(p_key));
  PERFORM ferry_take_over(p_key, p_lo, p_hi);
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

CREATE OR REPLACE FUNCTION ferry_claim_free(p_key TEXT, p_lo BIGINT, p_hi BIGINT, p_kind TEXT, p_node INTEGER)
RETURNS TABLE (granted BOOLEAN, token TEXT, kind TEXT)
LANGUAGE plpgsql ROWS 1 AS $$
DECLARE
  v_token TEXT;
BEGIN
  PERFORM pg_advisory_xact_lock(1281712499, hashtext(p_key));
  PERFORM ferry_take_over(p_key, p_lo, p_hi);
  RETURN QUERY
    SELECT false, l.token, l.kind FROM leases l
    WHERE l.key = p_key AND l.lo < p_hi AND l.hi > p_lo;
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

CREATE OR REPLACE FUNCTION ferry_claim_commit_turn(p_key TEXT, p_session TEXT, p_node INTEGER)
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
    PERFORM pg_advisory_xact_lock(1281712499, hashtext(v_id));
    PERFORM ferry_take_over(v_id, 0, 9223372036854775807);
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

-- The gates of a commit that claimed nothing (migrations 15 and 20) read
-- the records without taking anything over: a lease of the session's
-- turn, even a dead node's, now sends the commit the usual way, which
-- claims, and so fences the dead node first.
CREATE OR REPLACE FUNCTION ferry_commit_ready(
  p_key TEXT, p_session TEXT, p_upload TEXT, p_whole BOOLEAN, p_sealed TEXT,
  p_metadata TEXT, p_content_type TEXT, p_dialect_state TEXT, p_expires_at BIGINT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF NOT pg_try_advisory_xact_lock(1281712499, hashtext(p_upload))
     OR NOT pg_try_advisory_xact_lock(1281712499, hashtext(p_key)) THEN
    RETURN false;
  END IF;
  IF EXISTS (SELECT 1 FROM leases l WHERE l.key IN (p_upload, p_key)) THEN
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

CREATE OR REPLACE FUNCTION ferry_write_commit_ready(
  p_key TEXT, p_session TEXT, p_upload TEXT, p_whole BOOLEAN,
  p_metadata TEXT, p_content_type TEXT, p_dialect_state TEXT, p_expires_at BIGINT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF NOT pg_try_advisory_xact_lock(1281712499, hashtext(p_upload))
     OR NOT pg_try_advisory_xact_lock(1281712499, hashtext(p_key)) THEN
    RETURN false;
  END IF;
  IF EXISTS (SELECT 1 FROM leases l WHERE l.key IN (p_upload, p_key)) THEN
    RETURN false;
  END IF;
  RETURN EXISTS (
      SELECT 1 FROM uploads u JOIN sessions s ON s.id = u.session_id
      WHERE u.id = p_upload AND s.id = p_session AND u.state = 'open' AND s.state = 'open'
        AND NOT u.claimed AND NOT u.direct AND u.sealed IS NULL
        AND u.metadata IS NOT DISTINCT FROM p_metadata
        AND u.content_type IS NOT DISTINCT FROM p_content_type
        AND u.dialect_state IS NOT DISTINCT FROM p_dialect_state
        AND s.expires_at = p_expires_at)
    AND NOT EXISTS (SELECT 1 FROM ranges WHERE upload_id = p_upload)
    AND NOT EXISTS (SELECT 1 FROM parts WHERE upload_id = p_upload)
    AND NOT (p_whole AND EXISTS (
      SELECT 1 FROM uploads o WHERE o.session_id = p_session AND o.id <> p_upload));
END
$$;

-- Fences every dead node that still has connections: start-up recovery
-- (`fence_dead`) runs once no statement of a node killed a moment ago can
-- land.
CREATE FUNCTION ferry_fence_dead() RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_node INTEGER;
  v_all BOOLEAN := true;
BEGIN
  FOR v_node IN SELECT * FROM ferry_dead_nodes() LOOP
    v_all := ferry_fence(v_node) AND v_all;
  END LOOP;
  RETURN v_all;
END
$$;
