-- The dispatcher claims a coin tick's jobs of all models together (one POST per URL
-- per coin); this finds the other models' pending jobs of a claimed tick.
CREATE INDEX webhook_outbox_pending_tick ON webhook_outbox (coin_id, data_timestamp)
    WHERE status = 'pending';
