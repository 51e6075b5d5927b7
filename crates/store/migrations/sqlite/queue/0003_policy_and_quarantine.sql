-- The policy engine: stored policies (versions), quarantine areas and what they hold
-- (recipients of the message as received, state 'quarantined'), and the rule a released
-- message skips when it is processed again.
CREATE TABLE policies (
    version INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    author TEXT NOT NULL
);
CREATE TABLE areas (
    name TEXT PRIMARY KEY,
    retention_secs INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY,
    message TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    area TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL,
    at INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'held'
);
CREATE INDEX quarantine_held ON quarantine(state, area, at);
ALTER TABLE recipients ADD COLUMN hold INTEGER;
ALTER TABLE messages ADD COLUMN skip_rule TEXT;
