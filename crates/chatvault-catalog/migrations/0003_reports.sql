-- Report definitions: the built-in library (seeded from the repository's reports/ at
-- every start) and custom reports created through the admin API. The definition is
-- kept as JSON so the catalog need not know its fields; chatvault-reports validates it.
CREATE TABLE reports (
    id         TEXT PRIMARY KEY,
    builtin    BIGINT NOT NULL,
    definition TEXT NOT NULL,
    updated_us BIGINT NOT NULL
);
