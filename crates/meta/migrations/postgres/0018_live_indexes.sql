-- Indexes whose plans stay on the primary key.
--
-- A session's or an upload's state changes by `... WHERE id = $1 AND
-- state = 'open'`. With an index led by `state`, a cached (generic) plan
-- could read every open row of the table and compare ids: the planner
-- prices `state = 'open'` from the column's statistics, which a big table
-- refreshes only after a tenth of it has changed, so once it had seen few
-- open rows, it kept reading them all as they grew (a benchmark's commit
-- read 18 uploads and 4 sessions to change one of each). The indexes that
-- served lookups by state now name it only in their predicate, over the
-- rows still live, keyed by what their own queries look up:
-- - `sessions_expiry`: open sessions by expiry (the reaper);
-- - `uploads_live`: ids of open and committing uploads (start-up
--   recovery).
-- Start-up recovery's open and committing sessions are read from
-- `sessions_open` (migration 10).
--
-- Sessions first, then uploads: the order most statements lock them in.
-- Nodes still running meanwhile wait for this to commit (the new indexes
-- are built over each whole table).
DROP INDEX sessions_expiry;
CREATE INDEX sessions_expiry ON sessions (expires_at) WHERE state = 'open';
DROP INDEX uploads_state;
CREATE INDEX uploads_live ON uploads (id) WHERE state IN ('open', 'committing');
