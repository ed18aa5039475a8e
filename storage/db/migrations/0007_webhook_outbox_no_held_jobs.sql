-- Webhook jobs of a batch are now queued by the batcher once every model committed
-- (one job per URL and coin tick), instead of being inserted held (due at
-- 'infinity') by each model and released later. Jobs a previous version left held
-- when it stopped are made due, or they would wait forever.
UPDATE webhook_outbox SET next_attempt_at = now()
WHERE status = 'pending' AND next_attempt_at = 'infinity'::timestamptz;
