-- The latest snapshot of each stream. payload is json (not jsonb) so the
-- bytes read back are the bytes saved.
CREATE TABLE {{.Snapshots}} (
    stream_id      text        NOT NULL PRIMARY KEY,
    stream_version bigint      NOT NULL CHECK (stream_version >= 1),
    snapshot_type  text        NOT NULL,
    payload        json        NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
