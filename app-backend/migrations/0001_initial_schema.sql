-- The seed's schema (MASTER_SPRINT.md, "Database Schema"), unchanged.
-- Runs as app_owner (the migrator does SET ROLE app_owner first), so every
-- table belongs to app_owner and the runtime role gets DML through the
-- default privileges in policies/postgres/roles.sql.

CREATE TABLE users (
    id SERIAL PRIMARY KEY,
    username VARCHAR(50) UNIQUE NOT NULL,
    email VARCHAR(100) UNIQUE,
    password_hash VARCHAR(255) NOT NULL,
    created_at TIMESTAMP DEFAULT NOW(),
    updated_at TIMESTAMP DEFAULT NOW()
);

CREATE TABLE github_integrations (
    id SERIAL PRIMARY KEY,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    is_configured BOOLEAN DEFAULT FALSE,
    configured_at TIMESTAMP,
    last_accessed TIMESTAMP,
    UNIQUE(user_id)
);

CREATE TABLE audit_log (
    id SERIAL PRIMARY KEY,
    user_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
    action VARCHAR(100) NOT NULL,
    resource VARCHAR(100),
    timestamp TIMESTAMP DEFAULT NOW(),
    details JSONB
);

CREATE INDEX idx_users_username ON users(username);
CREATE INDEX idx_github_integrations_user_id ON github_integrations(user_id);
CREATE INDEX idx_audit_log_timestamp ON audit_log(timestamp DESC);
