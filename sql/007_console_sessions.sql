-- Mission Control's login sessions, shared by every node of the store so
-- that a console behind a load balancer stays logged in, and a logout on
-- one node ends the session on all. The browser holds the session's id in
-- a cookie; the table keeps only its SHA-256, so that reading the table
-- gives no one a session.
CREATE TABLE console_sessions (
    id_hash     bytea PRIMARY KEY,          -- SHA-256 of the cookie's session id
    user_name   text NOT NULL,
    csrf        text NOT NULL,              -- the token every change must carry (X-CSRF-Token)
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,       -- absolute end of the session
    seen_at     timestamptz NOT NULL        -- last use; the session ends after a while without one
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
