-- A claim takes due jobs in (next_attempt_at, id) order. With the index on
-- next_attempt_at alone, PostgreSQL sorted every job that shares a timestamp (one
-- enqueue transaction's worth, hundreds) before it could stop at the LIMIT; this
-- index hands them out already ordered. It replaces webhook_outbox_due.
CREATE INDEX webhook_outbox_due_order ON webhook_outbox (next_attempt_at, id)
    WHERE status = 'pending';
DROP INDEX webhook_outbox_due;

-- An attempt's job: the attempts of one job (API) and the last attempt time of each
-- listed job were sequential scans of an ever-growing table.
CREATE INDEX webhook_attempts_outbox ON webhook_attempts (outbox_id);

-- A claim only moves locked_until, which no index covers: with room left on the
-- page PostgreSQL updates the row in place (HOT) instead of adding an entry to every
-- index of the table. Applies to pages written from now on.
ALTER TABLE webhook_outbox SET (fillfactor = 70);
