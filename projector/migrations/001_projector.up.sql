-- One row per projection version: its checkpoint in the global feed and its
-- lifecycle. status: 'active' (the version readers see; at most one per
-- projection), 'building' (a newer version filling beside the active one),
-- 'retired' (replaced by a newer version).
CREATE TABLE {{.Checkpoints}} (
    projection     text        NOT NULL,
    version        integer     NOT NULL CHECK (version >= 1),
    transaction_id xid8        NOT NULL DEFAULT '0',
    position       bigint      NOT NULL DEFAULT 0,
    status         text        NOT NULL CHECK (status IN ('active', 'building', 'retired')),
    rebuilding     boolean     NOT NULL DEFAULT false,
    stopped        boolean     NOT NULL DEFAULT false,
    last_error     text,
    error_at       timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    activated_at   timestamptz,
    PRIMARY KEY (projection, version)
);
CREATE UNIQUE INDEX {{.CheckpointsActiveKey}} ON {{.Checkpoints}} (projection) WHERE status = 'active';

-- Events a projection's handler failed on, parked by the dead-letter policy.
CREATE TABLE {{.DeadLetters}} (
    projection     text        NOT NULL,
    version        integer     NOT NULL,
    event_id       uuid        NOT NULL,
    transaction_id xid8        NOT NULL,
    position       bigint      NOT NULL,
    stream_id      text        NOT NULL,
    event_type     text        NOT NULL,
    error          text        NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, version, event_id)
);

-- Broker messages a consumer has applied, for exactly-once effects from an
-- at-least-once broker (NewInboxHandler).
CREATE TABLE {{.Inbox}} (
    consumer     text        NOT NULL,
    message_uuid text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_uuid)
);
