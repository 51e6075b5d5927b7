-- Sealed messages kept on the server (large messages, forward-to-decrypt links), found by
-- the SHA-256 of their link's token.
CREATE TABLE kept (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    message TEXT NOT NULL,
    kind TEXT NOT NULL,
    forwarder TEXT,
    size INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX kept_expiry ON kept(expires_at);
CREATE INDEX kept_forwarder ON kept(forwarder, created_at);
