-- Issue #19 (PostgreSQL CPU per coin tick): a webhook job's payload (~2.3 kB of JSON
-- text per coin tick with ten models) was stored as jsonb, compressed inline (pglz).
-- Its INSERT parsed it into jsonb and compressed it; its settlement (never a HOT
-- update) copied the compressed 1.3 kB into the new row version. Nothing searches
-- inside it: the service writes the text once, reads it back only for a job it sends
-- again (a claim) or shows (the API), and retention looks for a snapshot key in it.
-- As json (kept as written, checked to be JSON) and stored out of line uncompressed,
-- the INSERT only checks the text and the settlement copies a pointer. Measured with
-- the service's own enqueue and settle statements, 20 jobs per statement, on the
-- embedded PostgreSQL: 83-87 -> 61-65 us of backend CPU per job (docs/benchmarks.md).
--
-- The type change rewrites the table once (its delivered jobs are kept for
-- webhook_retention_seconds): about 1 million jobs at 50 ticks/s and the default 6 h.
ALTER TABLE webhook_outbox
    ALTER COLUMN payload TYPE json USING payload::json,
    ALTER COLUMN payload SET STORAGE EXTERNAL;
