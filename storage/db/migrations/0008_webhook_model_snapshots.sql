-- A coin tick's job carries every model's prediction, and each prediction names its
-- model with the full definition (CONTRACTS.md section 4: features and all), ~1.3 kB
-- per model. Stored in every job that was ~13 kB of jsonb per tick with ten models,
-- six times the database work of the rest of the row. A job now refers to each
-- model's definition by the SHA-256 of its JSON text, stored once here
-- ({"snapshot": key} in place of the model object); the dispatcher puts the text
-- back before sending. Snapshots are immutable, so a retry hours later still sends
-- the model as it was when predicted. Jobs written before keep their inline models.
CREATE TABLE webhook_model_snapshots (
    key        text PRIMARY KEY,  -- sha256 of model_json
    model_json text NOT NULL,     -- the `model` object exactly as sent
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A payload with its snapshot references replaced by the models (API reads).
CREATE FUNCTION webhook_payload_expanded(payload jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN jsonb_typeof(payload->'predictions') = 'array' THEN
        jsonb_set(payload, '{predictions}', coalesce((
            SELECT jsonb_agg(
                CASE WHEN s.key IS NULL THEN e.item
                     ELSE jsonb_set(e.item, '{model}', s.model_json::jsonb) END
                ORDER BY e.ord)
            FROM jsonb_array_elements(payload->'predictions') WITH ORDINALITY AS e(item, ord)
            LEFT JOIN webhook_model_snapshots s ON s.key = e.item->'model'->>'snapshot'
        ), '[]'::jsonb))
    ELSE payload END
$$;
