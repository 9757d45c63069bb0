-- An attempt no longer keeps a copy of its request body (issue 13: the
-- copy was a quarter of the WAL a delivered row change cost, and one more
-- copy for each retry). The body is the event's row rendered in the
-- trigger's format, with the sending node as the CloudEvent's source, so
-- an attempt records the format it was sent in, and readers render the
-- row again. request_body stays NOT NULL and is '' for such attempts: a
-- node of an earlier version then shows an empty body rather than failing
-- to read the row. Attempts logged before keep their copy, and a NULL
-- request_format.
ALTER TABLE invocation_logs ADD COLUMN request_format text;
