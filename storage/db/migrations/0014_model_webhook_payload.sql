-- Issue #25: a model may send a compact webhook payload (its model object without the
-- feature list, ~1.8 kB of the ~2 kB per prediction). NULL follows the global
-- N8N_PAYLOAD setting; the dispatcher applies it when it sends.
ALTER TABLE active_models ADD COLUMN n8n_payload text
    CHECK (n8n_payload IN ('full', 'compact'));
