-- One shipment per paid order. The primary key is the second guard; the
-- first is the projector inbox, which applies each broker message once.
CREATE TABLE {{.Shipments}} (
    order_id     text        PRIMARY KEY,
    customer_id  text        NOT NULL,
    currency     text        NOT NULL,
    amount_cents bigint      NOT NULL,
    event_id     uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
