-- The state of the event sources, as the node holding each reported it
-- with its last heartbeat, so that every node's admin API can answer for
-- every source (GET /v1/admin/sources). One row per database or storage
-- directory of a project, written by whichever node holds it now.
CREATE TABLE sources (
    kind           text NOT NULL CHECK (kind IN ('database', 'storage')),
    project        text NOT NULL,
    alias          text NOT NULL,                  -- the database's or directory's alias in the config
    node_id        text NOT NULL,                  -- the node that last reported holding it
    reported_at    timestamptz NOT NULL,           -- by the store's clock
    last_change_at timestamptz,                    -- database: commit time of the last row change received
    files_indexed  integer,                        -- storage: files in the directory's index
    watches        integer,                        -- storage: folders with a kernel watch
    last_rescan_at timestamptz,                    -- storage: when the directory was last compared with its index
    PRIMARY KEY (kind, project, alias)
);
