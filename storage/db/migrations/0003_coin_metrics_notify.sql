-- Wake the service when the collector inserts coin_metrics rows.
--
-- One notification per INSERT statement (statement-level trigger over the
-- transition table), not one per row: a collector writing 500 rows in one
-- statement pays for one pg_notify. The payload is tiny ({"rows": n, "max_id": id}),
-- far below the 8000-byte limit; it is only a wake-up, the table is the truth.
-- NOTIFY is delivered on commit, so the poller always sees the rows it announces.
DO $$
BEGIN
    IF to_regclass('coin_metrics') IS NULL THEN
        RAISE EXCEPTION 'table coin_metrics does not exist in this database: '
            'pump-predictor reads the collector''s coin_metrics; point DB_DSN at its database';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pump_predictor_notify_coin_metrics() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    inserted bigint;
    newest bigint;
BEGIN
    SELECT count(*), max(id) INTO inserted, newest FROM pump_predictor_new_rows;
    IF inserted > 0 THEN
        PERFORM pg_notify(
            'coin_metrics_insert',
            json_build_object('rows', inserted, 'max_id', newest)::text
        );
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS pump_predictor_notify ON coin_metrics;
CREATE TRIGGER pump_predictor_notify
    AFTER INSERT ON coin_metrics
    REFERENCING NEW TABLE AS pump_predictor_new_rows
    FOR EACH STATEMENT
    EXECUTE FUNCTION pump_predictor_notify_coin_metrics();
