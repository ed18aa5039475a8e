-- Shadow mode: a shadow model is predicted, stored and evaluated like any model but
-- never sent to webhooks. 'live' keeps every existing model as it was.
ALTER TABLE active_models
    ADD COLUMN mode text NOT NULL DEFAULT 'live' CHECK (mode IN ('live', 'shadow'));
