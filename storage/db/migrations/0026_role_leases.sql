-- Roles one process at a time runs among every replica and worker (docs/scale-out.md):
-- 'housekeeping' is the evaluator and retention. A lease row like a shard's
-- (0020_shards.sql): the holder, until when, and a generation every claim increments.
-- host and pid say where the holder runs (GET /api/shards). Rows are created by the
-- first claim of a role.
CREATE TABLE role_leases (
    role       text PRIMARY KEY,
    holder     text,
    host       text,
    pid        integer,
    generation bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '-infinity',
    claimed_at timestamptz
);
