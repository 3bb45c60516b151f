-- Ferry's metadata schema for PostgreSQL: the same tables as SQLite's
-- (its SCHEMA with every added column and index). Columns compared by range
-- or sorted (paths, the ids listings order by, members) use the "C"
-- collation: byte order, as in SQLite, whatever the database's locale.
-- "user", "end" and "offset" are reserved words here and stay quoted.

CREATE TABLE users (
  name TEXT PRIMARY KEY,
  admin BOOLEAN NOT NULL,
  quota_bytes BIGINT,
  max_open_sessions BIGINT,
  home_space TEXT NOT NULL,
  created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
  id TEXT PRIMARY KEY,
  "user" TEXT NOT NULL REFERENCES users(name),
  hash BYTEA NOT NULL,
  created_at BIGINT NOT NULL,
  revoked BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE spaces (
  name TEXT PRIMARY KEY,
  owner TEXT,
  created_at BIGINT NOT NULL
);

CREATE TABLE grants (
  space TEXT NOT NULL REFERENCES spaces(name),
  "user" TEXT COLLATE "C" NOT NULL,
  access TEXT NOT NULL,
  PRIMARY KEY (space, "user")
);

CREATE TABLE sessions (
  id TEXT COLLATE "C" PRIMARY KEY,
  owner TEXT NOT NULL,
  space TEXT NOT NULL,
  conflict TEXT NOT NULL,
  auto_commit BOOLEAN NOT NULL,
  state TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  dialect TEXT NOT NULL,
  extend_secs BIGINT,
  open_ended BOOLEAN NOT NULL DEFAULT FALSE,
  files_expire BOOLEAN NOT NULL DEFAULT FALSE,
  failure TEXT
);
CREATE INDEX sessions_owner ON sessions(owner, state);
CREATE INDEX sessions_expiry ON sessions(state, expires_at);

CREATE TABLE uploads (
  id TEXT COLLATE "C" PRIMARY KEY,
  session_id TEXT NOT NULL REFERENCES sessions(id),
  idx BIGINT NOT NULL,
  path TEXT COLLATE "C" NOT NULL,
  length BIGINT,
  part_size BIGINT NOT NULL,
  state TEXT NOT NULL,
  expected_sha256 TEXT,
  content_type TEXT,
  metadata TEXT,
  final_path TEXT,
  file_id TEXT,
  whole_digests TEXT,
  replaces TEXT,
  dialect_state TEXT,
  direct BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX uploads_session ON uploads(session_id, idx);
CREATE INDEX uploads_session_path ON uploads(session_id, path);
CREATE INDEX uploads_state ON uploads(state);

-- Insert-only: each durable write adds its range (see `record_write`).
CREATE TABLE ranges (
  upload_id TEXT NOT NULL,
  start BIGINT NOT NULL,
  "end" BIGINT NOT NULL
);
CREATE INDEX ranges_upload ON ranges(upload_id);

CREATE TABLE parts (
  upload_id TEXT NOT NULL,
  number BIGINT NOT NULL,
  "offset" BIGINT NOT NULL,
  size BIGINT NOT NULL,
  sha256 TEXT,
  sha1 TEXT,
  md5 TEXT,
  PRIMARY KEY (upload_id, number)
);

CREATE TABLE files (
  id TEXT COLLATE "C" PRIMARY KEY,
  space TEXT NOT NULL,
  path TEXT COLLATE "C" NOT NULL,
  size BIGINT NOT NULL,
  sha256 TEXT NOT NULL,
  sha1 TEXT,
  md5 TEXT,
  content_type TEXT,
  owner TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  metadata TEXT,
  expires_at BIGINT,
  dialect_state TEXT,
  object TEXT,
  UNIQUE (space, path)
);
CREATE INDEX files_owner ON files(owner);
CREATE INDEX files_expiry ON files(expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX files_object ON files(object) WHERE object IS NOT NULL;
