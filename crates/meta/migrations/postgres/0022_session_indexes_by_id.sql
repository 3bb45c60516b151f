-- The partial indexes of sessions carry the session's id as their last key.
--
-- A session's state changes by `... WHERE id = $1 AND state = 'open'`, and
-- the checks of a write or a commit read it the same way. Those statements
-- also match the predicates of `sessions_expiry` and `sessions_open`,
-- which hold only the live sessions: when their statistics say they are
-- nearly empty (a new database, or one last vacuumed when few sessions
-- were open), the planner prefers them to the primary key and reads every
-- open session's row to compare its id (a benchmark at 64 uploads at once
-- read 64 rows per statement, and a server with 10,000 open sessions
-- would read them all). With the id in the index, such a plan compares
-- ids in the index itself, and visits one row. Their own queries (expiry,
-- an owner's open sessions) read them as before.
--
-- Only live sessions are in them: rebuilding them is short.
DROP INDEX sessions_expiry;
CREATE INDEX sessions_expiry ON sessions (expires_at, id) WHERE state = 'open';
DROP INDEX sessions_open;
CREATE INDEX sessions_open ON sessions (owner, id) WHERE state IN ('open', 'committing');
