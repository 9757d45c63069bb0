-- Events and delivery attempts. Tables are created in the store's schema
-- (search_path is set to it before this file runs).

-- One row per (event, trigger): the delivery of one event to one webhook.
CREATE TABLE event_logs (
    id             uuid PRIMARY KEY,            -- UUIDv7; the CloudEvent id of every attempt
    batch_id       uuid NOT NULL,               -- the event's id, shared by the rows of its triggers
    project        text NOT NULL,
    trigger_name   text NOT NULL,
    type           text NOT NULL,
    payload        json,                        -- the CloudEvent's data, kept byte for byte
    event_time     timestamptz NOT NULL,        -- when the event occurred (CloudEvent time)
    fire_at        timestamptz NOT NULL,        -- when delivery was scheduled for (time + delay)
    is_synchronous boolean NOT NULL DEFAULT false,
    status         text NOT NULL DEFAULT 'staged'
                   CHECK (status IN ('staged', 'processed', 'failed', 'cancelled')),
    attempts       integer NOT NULL DEFAULT 0,  -- attempts completed so far
    due_at         timestamptz,                 -- staged rows: when any node may claim the row next
    claimed_by     text,                        -- node holding the row until due_at
    remark         text,                        -- why a row failed or was cancelled
    response       json,                        -- the "response" field of the webhook's answer
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Claims look up due staged rows of one trigger; processed rows leave the index.
CREATE INDEX event_logs_due ON event_logs (project, trigger_name, due_at) WHERE status = 'staged';
CREATE INDEX event_logs_batch ON event_logs (batch_id);

-- One row per delivery attempt.
CREATE TABLE invocation_logs (
    id              uuid PRIMARY KEY,           -- UUIDv7
    event_id        uuid NOT NULL REFERENCES event_logs (id) ON DELETE CASCADE,
    attempt         integer NOT NULL,           -- 1 for the first attempt
    node_id         text NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     double precision NOT NULL,
    request_body    text NOT NULL,
    response_status integer,                    -- NULL when no HTTP answer came
    response_body   text,                       -- capped
    error           text                        -- NULL on success
);

CREATE INDEX invocation_logs_event ON invocation_logs (event_id);
