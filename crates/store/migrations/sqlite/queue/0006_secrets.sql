-- Secrets the gateway makes for itself once (the key of the gateway's mark).
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
