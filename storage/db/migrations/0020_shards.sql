-- Coin shards leased by worker processes and replicas (docs/scale-out.md).
--
-- shard_config: SHARD_COUNT, written by the first start; later starts compare it.
-- shard_holders: every live process that takes part, with its heartbeat expiry; the
--   live count decides each holder's fair share of the shards.
-- shard_leases: one row per shard: who holds it until when, and a generation that
--   every claim increments: the storing transaction and the cursor move check it,
--   so a holder that lost its lease (paused, partitioned) cannot commit.
-- Each shard's durable intake cursor is an intake_cursor row named
-- 'coin_metrics/<shard>' (the single 'coin_metrics' row is split into them once).
CREATE TABLE shard_config (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    shard_count integer NOT NULL CHECK (shard_count BETWEEN 1 AND 4096),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shard_holders (
    holder     text PRIMARY KEY,
    host       text NOT NULL,
    pid        integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

CREATE TABLE shard_leases (
    shard      integer PRIMARY KEY CHECK (shard >= 0),
    holder     text,
    generation bigint NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL DEFAULT '-infinity',
    claimed_at timestamptz
);

-- A coin's shard: the first 32 bits of md5(mint) modulo the count. md5 is stable
-- across PostgreSQL versions and platforms (hashtext is not promised to be), and
-- storage/shard_leases.shard_of computes the same in Python. A row without a mint
-- belongs to shard of '' so exactly one holder counts it as skipped.
CREATE FUNCTION pp_shard_of(mint text, shard_count integer) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (('x' || substr(md5(coalesce(mint, '')), 1, 8))::bit(32)::bigint
                  % shard_count)::integer $$;
