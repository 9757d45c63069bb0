-- Triggers defined through the admin API, beside those of the config
-- file, and the record of every change made to them.

-- One row per trigger: spec is the trigger as JSON, with the keys of the
-- config file (config.Trigger's Document), checked as the config loader
-- checks a trigger before it is written.
CREATE TABLE triggers (
    project    text NOT NULL,
    name       text NOT NULL,
    spec       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL,                   -- the admin user who made the last change
    PRIMARY KEY (project, name)
);

-- One row per change: before is NULL for a create, after for a delete.
CREATE TABLE trigger_audit (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project      text NOT NULL,
    trigger_name text NOT NULL,
    action       text NOT NULL CHECK (action IN ('create', 'update', 'delete')),
    before       jsonb,
    after        jsonb,
    actor        text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX trigger_audit_trigger ON trigger_audit (project, trigger_name, at);
