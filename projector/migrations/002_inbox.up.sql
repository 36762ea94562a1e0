-- What the inbox knows of each message it records, for Inbox.Status and
-- Inbox.Prune. Rows recorded before this migration have NULLs here.
ALTER TABLE {{.Inbox}}
    ADD COLUMN event_type     text,
    ADD COLUMN stream_id      text,
    ADD COLUMN stream_version bigint,
    ADD COLUMN transaction_id xid8,
    ADD COLUMN position       bigint;
CREATE INDEX {{.InboxProcessedAtIndex}} ON {{.Inbox}} (consumer, processed_at);

-- The last stream version each consumer applied, per stream, kept by the
-- inbox's stream version guard (InboxConfig.StreamVersionGuard); Prune does
-- not touch it.
CREATE TABLE {{.InboxStreams}} (
    consumer       text        NOT NULL,
    stream_id      text        NOT NULL,
    stream_version bigint      NOT NULL CHECK (stream_version >= 1),
    message_uuid   text        NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, stream_id)
);
