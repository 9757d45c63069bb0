-- What the file source has seen of each watched directory, so that after a
-- restart or a lost kernel event it can tell what was created or deleted.
-- A FILE_CREATE or FILE_DELETE is logged in the transaction that changes
-- its path's row here, and only when the row changes that way.
CREATE TABLE file_index (
    project  text NOT NULL,
    store    text NOT NULL,                     -- the storage alias
    path     text NOT NULL,                     -- relative to the directory, slash-separated
    type     text NOT NULL CHECK (type IN ('file', 'dir')),
    size     bigint NOT NULL,
    modified timestamptz NOT NULL,
    -- path first: a write looks up its own paths, and with path leading
    -- the planner cannot read a whole directory's rows instead, whatever
    -- its statistics say of project and store.
    PRIMARY KEY (path, project, store)
);
