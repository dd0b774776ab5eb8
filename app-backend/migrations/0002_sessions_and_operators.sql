-- Issue 16, 7: server-side logout and who may read /api/zt/status.
-- Runs as app_owner like 0001; the runtime role gets DML on the new table
-- through the default privileges in policies/postgres/roles.sql.

-- Operators may see /api/zt/status (role names, lease IDs, versions). Only
-- the seeded demo users are operators, and only while seeding is on; a
-- self-registered user never is.
ALTER TABLE users ADD COLUMN is_operator BOOLEAN NOT NULL DEFAULT FALSE;

-- Tokens ended by a logout, kept until they would have expired anyway.
CREATE TABLE revoked_tokens (
    jti VARCHAR(64) PRIMARY KEY,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    expires_at TIMESTAMP NOT NULL
);

CREATE INDEX idx_revoked_tokens_expires_at ON revoked_tokens(expires_at);
