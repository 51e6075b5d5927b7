-- Claims name the node that holds them, and a claimed message until when: a node takes
-- back only its own after a crash, and another's once it has run out.
ALTER TABLE messages ADD COLUMN owner TEXT;
ALTER TABLE messages ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE recipients ADD COLUMN owner TEXT;
