-- The key server: gateway tokens, reader sessions, sign-in codes, locks, the audit log.
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    hash BLOB NOT NULL UNIQUE,
    domains TEXT NOT NULL,
    created INTEGER NOT NULL,
    revoked INTEGER
);
CREATE TABLE sessions (
    hash BLOB PRIMARY KEY,
    address TEXT NOT NULL,
    expires INTEGER NOT NULL
);
CREATE TABLE codes (
    address TEXT PRIMARY KEY,
    hash BLOB NOT NULL,
    salt BLOB NOT NULL,
    sent_at INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    attempts_left INTEGER NOT NULL
);
CREATE TABLE locks (
    address TEXT PRIMARY KEY,
    until INTEGER NOT NULL
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    client TEXT NOT NULL,
    address TEXT,
    epoch TEXT,
    kind TEXT,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_address ON audit(address, at);
CREATE INDEX audit_at ON audit(at);
