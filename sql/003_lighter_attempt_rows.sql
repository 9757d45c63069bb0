-- An attempt's row costs less to write (issue 13, measured with
-- pg_stat_statements while a 100,000-row transaction was delivered):
-- - The foreign key to event_logs looked the event row up and locked it
--   (FOR KEY SHARE, a WAL record of its own) for every attempt, though
--   triggerd writes an attempt only for a row it holds. Rows of
--   event_logs and their attempts are deleted together by triggerd.
-- - One index instead of two: attempts are read by event, and an
--   attempt's id is unique within its event.
ALTER TABLE invocation_logs DROP CONSTRAINT invocation_logs_event_id_fkey;
ALTER TABLE invocation_logs DROP CONSTRAINT invocation_logs_pkey;
ALTER TABLE invocation_logs ADD PRIMARY KEY (event_id, id);
DROP INDEX invocation_logs_event;
