-- The bytes of small messages and kept sealed messages, by their id, written in the same
-- transaction as their row (larger ones are files in the spool).
CREATE TABLE bodies (
    id TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
