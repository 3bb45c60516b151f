-- Indexes whose plans stay on the primary key, and fewer to keep.
--
-- A session's or an upload's state changes by `... WHERE id = $1 AND
-- state = 'open'`. With an index led by `state`, a cached (generic) plan
-- could read every open row of the table and compare ids: the planner
-- prices `state = 'open'` from the column's statistics, which a big table
-- refreshes only after a tenth of it has changed, so once it had seen few
-- open rows, it kept reading them all as they grew (a benchmark's commit
-- read 18 uploads and 4 sessions to change one of each). The indexes that
-- name the state now only in their predicate, over the rows still live,
-- keyed by what their own queries look up:
-- - `uploads_live` (ids of open and committing uploads: start-up recovery),
-- - `sessions_expiry` (open sessions by expiry: the reaper),
-- and `sessions_open` (migration 10) serves the owner's, and start-up
-- recovery's, open and committing sessions. `sessions_owner`, which
-- `sessions_open` replaced, goes.
--
-- Each index goes away from every session's and upload's writes too: the
-- state changes of a small upload had each updated all three.
DROP INDEX uploads_state;
CREATE INDEX uploads_live ON uploads (id) WHERE state IN ('open', 'committing');
DROP INDEX sessions_expiry;
CREATE INDEX sessions_expiry ON sessions (expires_at) WHERE state = 'open';
DROP INDEX sessions_owner;
