-- Partitioned projections (Projection.Partitions): each projection version
-- has one checkpoint row per partition, 0 .. partitions-1, all with the same
-- partitions count (fixed for the version's life) and the same status.
-- Existing rows become partition 0 of 1.
ALTER TABLE {{.Checkpoints}}
    ADD COLUMN partition  integer NOT NULL DEFAULT 0,
    ADD COLUMN partitions integer NOT NULL DEFAULT 1,
    ADD CONSTRAINT {{.CheckpointsPartitionCheck}} CHECK (partition >= 0 AND partition < partitions);
ALTER TABLE {{.Checkpoints}} DROP CONSTRAINT {{.CheckpointsPkey}};
ALTER TABLE {{.Checkpoints}} ADD PRIMARY KEY (projection, version, partition);
-- At most one live version per projection: one active row per partition.
DROP INDEX {{.CheckpointsActiveKeyQualified}};
CREATE UNIQUE INDEX {{.CheckpointsActiveKey}} ON {{.Checkpoints}} (projection, partition) WHERE status = 'active';

-- The partition whose worker parked the event (0 for rows parked before).
ALTER TABLE {{.DeadLetters}} ADD COLUMN partition integer NOT NULL DEFAULT 0;
