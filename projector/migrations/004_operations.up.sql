-- Operations without the application's code (the esox command; see
-- docs/operations.md). An operator's request is recorded on the checkpoint
-- row; the leading worker of the version (partition), which has the code,
-- performs it when it re-reads its row, and a pending rebuild or retry
-- fences its batches (their compare-and-set requires none).
--   rebuild_requested: Reset the version's tables and replay it from the
--     start (set on every partition of the version).
--   retry_requested:   re-apply the partition's dead letters whose
--     retry_requested_at is set.
--   request_error:     why the last request could not be performed (no
--     Reset func, Reset failed); cleared by the next request.
--   skip_*:            one event the partition passes over without applying
--     it when its batch comes; cleared once the checkpoint is past it.
--   error_event_id:    the event the handler failed on when the partition
--     stopped, when the handler named it.
ALTER TABLE {{.Checkpoints}}
    ADD COLUMN rebuild_requested   boolean NOT NULL DEFAULT false,
    ADD COLUMN retry_requested     boolean NOT NULL DEFAULT false,
    ADD COLUMN request_error       text,
    ADD COLUMN skip_event_id       uuid,
    ADD COLUMN skip_transaction_id xid8,
    ADD COLUMN skip_position       bigint,
    ADD COLUMN error_event_id      uuid;

-- A dead letter an operator asked to retry (retry_requested_at), and what
-- came of the earlier retries: how many failed, and when the last did (its
-- error replaces error).
ALTER TABLE {{.DeadLetters}}
    ADD COLUMN retry_requested_at timestamptz,
    ADD COLUMN retries            integer NOT NULL DEFAULT 0,
    ADD COLUMN retried_at         timestamptz;
