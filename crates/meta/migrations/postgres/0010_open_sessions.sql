-- The owner's open sessions, counted at every session's creation under
-- the owner's lock (`ferry_owner_limits`), are read from an index of the
-- open ones only. The index on (owner, state) could leave the state to be
-- compared after reading each of the owner's sessions: an owner with
-- 10,000 ended sessions had each creation read them all, and every other
-- creation of that owner waited for it.
CREATE INDEX sessions_open ON sessions (owner) WHERE state IN ('open', 'committing');
