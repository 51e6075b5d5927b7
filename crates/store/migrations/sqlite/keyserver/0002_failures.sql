-- Wrong codes counted per address, across resends, so that asking for a new code does
-- not buy new guesses.
CREATE TABLE failures (
    address TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    since INTEGER NOT NULL
);
