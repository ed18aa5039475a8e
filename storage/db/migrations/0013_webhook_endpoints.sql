-- Issue #25: a webhook URL that answers 404 beyond WEBHOOK_NOT_FOUND_GRACE_SECONDS is
-- "endpoint missing" and its jobs wait (status 'waiting', never claimed) instead of
-- dying; they go back to pending when the endpoint answers again, when every model
-- they carry points to another URL, or when an operator retries them.
ALTER TABLE webhook_outbox DROP CONSTRAINT webhook_outbox_status_check;
ALTER TABLE webhook_outbox ADD CONSTRAINT webhook_outbox_status_check
    CHECK (status IN ('pending', 'delivered', 'dead', 'waiting'));
-- Sent as X-Pump-First-Attempt-At so a workflow can drop stale alerts after an outage.
ALTER TABLE webhook_outbox ADD COLUMN first_attempt_at timestamptz;
CREATE INDEX webhook_outbox_waiting ON webhook_outbox (target_url) WHERE status = 'waiting';

ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_outcome_check;
ALTER TABLE webhook_attempts ADD CONSTRAINT webhook_attempts_outcome_check
    CHECK (outcome IN ('delivered', 'retry', 'failed', 'dead', 'wait'));
CREATE INDEX webhook_attempts_recent_losses ON webhook_attempts (attempted_at)
    WHERE outcome IN ('dead', 'failed', 'wait');

-- One row per URL that failed: the start of its current failing streak (the grace of
-- 404s is counted from it) and since when it is missing. Deleted on the next success.
CREATE TABLE webhook_endpoints (
    target_url       text PRIMARY KEY,
    failing_since    timestamptz NOT NULL,
    missing_since    timestamptz,
    last_status_code integer,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
