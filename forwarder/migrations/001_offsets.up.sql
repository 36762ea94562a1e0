-- One row per consumer group: the feed position up to which the group's
-- forwarder has published every event. (transaction_id, position) is the
-- feed order; (0, 0) is "before everything".
CREATE TABLE {{.Offsets}} (
    consumer_group text        NOT NULL PRIMARY KEY,
    transaction_id xid8        NOT NULL DEFAULT '0',
    position       bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
