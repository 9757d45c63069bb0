-- Redelivery through the admin API. A redelivered row is staged again with
-- a fresh retry budget: its attempts go on being numbered after the old
-- ones, and the trigger's retries are counted from retry_base, the
-- attempts it had when it was last redelivered. A column with a constant
-- default is added without rewriting the table.
ALTER TABLE event_logs ADD COLUMN retry_base integer NOT NULL DEFAULT 0;

-- Failed and cancelled rows, newest first, all of them and by trigger:
-- the admin API's lists and bulk redeliveries of them (status=failed, with
-- or without a trigger) read these instead of walking the primary key
-- past every processed row. A row enters them only when it fails or is
-- cancelled, so inserts, claims and successful deliveries do not pay for
-- them (and outcomes are no HOT updates anyway: status is in the
-- predicate of event_logs_due).
CREATE INDEX event_logs_unsuccessful ON event_logs (status, id) WHERE status IN ('failed', 'cancelled');
CREATE INDEX event_logs_unsuccessful_trigger ON event_logs (project, trigger_name, status, id)
    WHERE status IN ('failed', 'cancelled');

-- The nodes sharing this store: each registers itself at start and writes
-- a heartbeat every few seconds, so that any node can say which are alive.
CREATE TABLE nodes (
    id           text PRIMARY KEY,                -- node_id
    version      text NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,            -- by the store's clock
    rows_held    integer NOT NULL                 -- claimed and not yet done, at the heartbeat
);
