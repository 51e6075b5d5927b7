-- The mail queue: messages and their recipients, each with its state.
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    client TEXT NOT NULL,
    helo TEXT NOT NULL,
    source TEXT NOT NULL,
    size INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    message_id TEXT,
    updated_at INTEGER NOT NULL
);
CREATE INDEX messages_state ON messages(state, received_at);
CREATE TABLE recipients (
    id INTEGER PRIMARY KEY,
    message TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    hop TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    leased_until INTEGER NOT NULL DEFAULT 0,
    last_reply TEXT
);
CREATE INDEX recipients_due ON recipients(state, next_attempt);
CREATE INDEX recipients_message ON recipients(message);
