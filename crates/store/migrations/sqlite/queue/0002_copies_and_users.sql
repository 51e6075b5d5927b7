-- Transformed copies (encrypted, decrypted) are messages of their own with a parent; what
-- the transformation did is noted; internal users are remembered for key prefetching.
ALTER TABLE messages ADD COLUMN parent TEXT;
ALTER TABLE messages ADD COLUMN note TEXT;
CREATE INDEX messages_parent ON messages(parent);
CREATE TABLE users (address TEXT PRIMARY KEY, last_seen INTEGER NOT NULL);
