-- The results of commands sent with an Idempotency-Key header. A row is
-- inserted in the transaction that appends the command's events, so a key
-- is recorded if and only if its events are.
CREATE TABLE {{.Keys}} (
    idempotency_key text        PRIMARY KEY,
    request_hash    text        NOT NULL,
    status          integer     NOT NULL,
    body            text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX {{.CreatedIndex}} ON {{.Keys}} (created_at);
