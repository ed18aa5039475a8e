-- Issue #19 (PostgreSQL CPU per coin tick): a job's items now refer to the part every
-- item of a model, tag and threshold shares (is_alert, alert_threshold, tag and the
-- model object) instead of holding it: {"prediction":..,"probability":..,"tail":key}.
-- That part is stored once per model, tag and threshold in webhook_model_snapshots: a
-- 32-hex-digit key (128 bits of SHA-256 of the text) and as text the JSON object of those
-- members (actors.webhooks.payload.item_tail); model snapshots keep 64-digit keys. A job
-- of ten models shrank from ~2.1 kB of payload (compressed on every INSERT, being past
-- PostgreSQL's threshold) to ~1.1 kB: the queueing statement 0.048 -> 0.026 ms of
-- statement time per coin tick in `bench.py pipeline` (docs/benchmarks.md, "Session 16").
-- Jobs written before keep their model references; both forms are expanded here and by
-- the dispatcher. Retention needs no change: a tail is kept while a job quotes its key.
COMMENT ON COLUMN webhook_model_snapshots.key IS
    'sha256 of model_json: 64 hex digits for a model object, its first 32 for an item tail';
COMMENT ON COLUMN webhook_model_snapshots.model_json IS
    'a model object exactly as sent, or an item tail: the members after an item''s probability';

-- A payload with its references replaced by what they stand for (API reads).
CREATE OR REPLACE FUNCTION webhook_payload_expanded(payload jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN jsonb_typeof(payload->'predictions') = 'array' THEN
        jsonb_set(payload, '{predictions}', coalesce((
            SELECT jsonb_agg(
                CASE WHEN t.key IS NOT NULL THEN (e.item - 'tail') || t.model_json::jsonb
                     WHEN s.key IS NOT NULL THEN jsonb_set(e.item, '{model}', s.model_json::jsonb)
                     ELSE e.item END
                ORDER BY e.ord)
            FROM jsonb_array_elements(payload->'predictions') WITH ORDINALITY AS e(item, ord)
            LEFT JOIN webhook_model_snapshots s ON s.key = e.item->'model'->>'snapshot'
            LEFT JOIN webhook_model_snapshots t ON t.key = e.item->>'tail'
        ), '[]'::jsonb))
    ELSE payload END
$$;
