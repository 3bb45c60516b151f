-- The columns that hold an upload's or a session's id, and the final path
-- of an upload being committed, compare in byte order ("C"), as the ids
-- and paths they refer to do. With the database's own collation, a
-- comparison with a "C" column (`parts.upload_id = uploads.id`) could not
-- use the index on the other side: every read of an upload scanned all
-- its parts, and ranges of paths compared in the database's locale
-- (`final_path >= 'a/' AND final_path < 'a0'`) could miss a path under a
-- locale that does not sort by bytes. Changing a column's collation
-- rebuilds its indexes (the tables are locked while it runs).
ALTER TABLE parts ALTER COLUMN upload_id TYPE TEXT COLLATE "C";
ALTER TABLE ranges ALTER COLUMN upload_id TYPE TEXT COLLATE "C";
ALTER TABLE uploads ALTER COLUMN session_id TYPE TEXT COLLATE "C";
ALTER TABLE uploads ALTER COLUMN final_path TYPE TEXT COLLATE "C";
