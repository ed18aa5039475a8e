-- Issue #23: opt-in batched delivery (WEBHOOK_BATCH_MAX_TICKS > 1) sends several coin
-- ticks in one POST. A batch is fixed when it is first claimed: its jobs carry the
-- batch's key, so a retry (or another dispatcher, after a lost lease) sends the same
-- ticks together again, with the same body and Idempotency-Key. NULL: sent one POST
-- per URL and coin tick (the default of CONTRACTS.md section 4).
ALTER TABLE webhook_outbox ADD COLUMN batch_key text;

-- A claim adds the other jobs of a due job's batch (like the other models' jobs of
-- its tick).
CREATE INDEX webhook_outbox_batch ON webhook_outbox (batch_key)
    WHERE batch_key IS NOT NULL AND status = 'pending';
