-- The events table: one row per event; also the transactional outbox.
-- The global feed is ordered by (transaction_id, position).
CREATE TABLE {{.Events}} (
    position       bigint      GENERATED ALWAYS AS IDENTITY,
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id       uuid        NOT NULL,
    stream_id      text        NOT NULL,
    stream_version bigint      NOT NULL,
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}',
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {{.EventsPKey}} PRIMARY KEY (transaction_id, position),
    CONSTRAINT {{.EventsEventIDKey}} UNIQUE (event_id),
    CONSTRAINT {{.EventsStreamVersionKey}} UNIQUE (stream_id, stream_version),
    CONSTRAINT {{.EventsStreamVersionCheck}} CHECK (stream_version >= 1)
);
