-- Hash chain (docs/compliance.md). Each event's digest is SHA-256 over the
-- digest of the event before it in its stream (empty for a stream's first
-- chained event, the genesis) and the event's content: its ID, stream,
-- version, type, schema version, and the text of its payload and metadata
-- (eventstore.ChainDigest has the byte layout). The append statement
-- computes it; rows stored before this migration keep a NULL digest and
-- each stream chains from its next append on. Adding a nullable column
-- without a default only changes the catalog: no row is rewritten.
ALTER TABLE {{.Events}} ADD COLUMN digest bytea;

-- The digest of one event, chained after state (the digest of the event
-- before it in the same append) or, for the append's first event, after
-- prev (the stream's last stored digest; NULL: the genesis). The byte
-- layout is eventstore.ChainDigest's: length-prefixed (int4) prev, the
-- event ID's 16 bytes, length-prefixed stream ID, the version (int8),
-- length-prefixed type, the schema version (int4), and the length-prefixed
-- UTF-8 text of the payload and of the metadata as jsonb renders them.
-- Operators can recompute a digest with it: esox_chain_step(NULL, <digest of
-- the previous event>, event_id, stream_id, ...). Shared by every store in
-- the schema, hence OR REPLACE. It is PL/pgSQL, not SQL: a SQL function
-- that cannot be inlined (an aggregate's step) is planned again on every
-- execution of the statement calling it, which took longer than the rest of
-- an append; PL/pgSQL keeps its plan for the session.
CREATE OR REPLACE FUNCTION {{.Schema}}.esox_chain_step(state bytea, prev bytea, event_id uuid, stream_id text,
        stream_version bigint, event_type text, schema_version integer, payload jsonb, metadata jsonb) RETURNS bytea
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
DECLARE
    p  bytea := coalesce(state, prev, ''::bytea);
    s  bytea := convert_to(stream_id, 'UTF8');
    t  bytea := convert_to(event_type, 'UTF8');
    pl bytea := convert_to(payload::text, 'UTF8');
    md bytea := convert_to(metadata::text, 'UTF8');
BEGIN
    RETURN sha256(int4send(octet_length(p)) || p || uuid_send(event_id)
        || int4send(octet_length(s)) || s || int8send(stream_version)
        || int4send(octet_length(t)) || t || int4send(schema_version)
        || int4send(octet_length(pl)) || pl || int4send(octet_length(md)) || md);
END
$$;
-- The chain folded over the events of one append, in order: a window
-- aggregate in the append statement.
CREATE OR REPLACE AGGREGATE {{.Schema}}.esox_chain(bytea, uuid, text, bigint, text, integer, jsonb, jsonb) (
    SFUNC = {{.Schema}}.esox_chain_step, STYPE = bytea);

-- Seals: a digest over every stream's head at a feed position
-- (eventstore.SealHasher), recorded here and meant to be exported.
CREATE TABLE {{.Seals}} (
    seal_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id xid8        NOT NULL,
    position       bigint      NOT NULL,
    streams        bigint      NOT NULL,
    events         bigint      NOT NULL,
    digest         bytea       NOT NULL,
    sealed_at      timestamptz NOT NULL DEFAULT now()
);
