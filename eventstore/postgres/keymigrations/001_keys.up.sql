-- The data keys of subjects (docs/compliance.md), wrapped under a
-- key-encryption key that is not in the database. At most one live key per
-- subject; Forget sets wrapped to NULL and keeps the row as a tombstone, so
-- that events encrypted with the key read as redacted, not as a missing key.
CREATE TABLE {{.Keys}} (
    key_id       uuid        PRIMARY KEY,
    subject      text        NOT NULL,
    wrapped      bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    forgotten_at timestamptz,
    CONSTRAINT {{.KeysForgottenCheck}} CHECK ((wrapped IS NULL) = (forgotten_at IS NOT NULL))
);
CREATE UNIQUE INDEX {{.KeysLiveIndex}} ON {{.Keys}} (subject) WHERE wrapped IS NOT NULL;
