-- History loads and evaluations read coin_metrics by (mint, timestamp). Install the
-- index only when no index already leads with those two columns (the collector may
-- have its own under another name).
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
        FROM pg_index i
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_attribute a1 ON a1.attrelid = t.oid AND a1.attnum = i.indkey[0]
        JOIN pg_attribute a2 ON a2.attrelid = t.oid AND a2.attnum = i.indkey[1]
        WHERE t.oid = to_regclass('coin_metrics')
          AND a1.attname = 'mint' AND a2.attname = 'timestamp'
    ) THEN
        CREATE INDEX coin_metrics_mint_timestamp_idx ON coin_metrics (mint, "timestamp");
    END IF;
END
$$;
