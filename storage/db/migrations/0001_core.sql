-- Tables pump-predictor owns.

-- A model imported from the Training Service and run by this service.
CREATE TABLE active_models (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id                bigint NOT NULL UNIQUE,            -- ml_models.id
    name                    text NOT NULL,
    custom_name             text,
    model_type              text NOT NULL CHECK (model_type IN ('random_forest', 'xgboost')),
    description             text,
    -- Target definition, copied at import (predictions keep their own copy).
    target_kind             text NOT NULL CHECK (target_kind IN ('time_based', 'classic')),
    target_variable         text,
    target_operator         text CHECK (target_operator IN ('>', '<', '>=', '<=', '=')),
    target_value            double precision,
    future_minutes          integer,
    price_change_percent    double precision,
    target_direction        text CHECK (target_direction IN ('up', 'down')),
    features                jsonb NOT NULL,
    phases                  jsonb,
    params                  jsonb NOT NULL DEFAULT '{}',
    training_metrics        jsonb NOT NULL DEFAULT '{}',
    -- The model file: where it is, what it must hash to, and whether it is usable.
    file_path               text NOT NULL,
    file_sha256             text NOT NULL,
    file_state              text NOT NULL DEFAULT 'ok'
                            CHECK (file_state IN ('ok', 'missing', 'redownloaded', 'error')),
    file_error              text,
    is_active               boolean NOT NULL DEFAULT true,
    -- Alerts (CONTRACTS.md section 3).
    alert_threshold         double precision NOT NULL DEFAULT 0.7
                            CHECK (alert_threshold >= 0.5 AND alert_threshold <= 1.0),
    n8n_webhook_url         text,
    n8n_enabled             boolean NOT NULL DEFAULT true,
    n8n_send_modes          text[] NOT NULL DEFAULT ARRAY['all'],
    coin_filter_mode        text NOT NULL DEFAULT 'all' CHECK (coin_filter_mode IN ('all', 'whitelist')),
    coin_whitelist          text[] NOT NULL DEFAULT '{}',
    ignore_negative_seconds integer NOT NULL DEFAULT 0 CHECK (ignore_negative_seconds BETWEEN 0 AND 86400),
    ignore_positive_seconds integer NOT NULL DEFAULT 0 CHECK (ignore_positive_seconds BETWEEN 0 AND 86400),
    ignore_alert_seconds    integer NOT NULL DEFAULT 0 CHECK (ignore_alert_seconds BETWEEN 0 AND 86400),
    max_open_negative       integer NOT NULL DEFAULT 0 CHECK (max_open_negative >= 0),
    max_open_positive       integer NOT NULL DEFAULT 0 CHECK (max_open_positive >= 0),
    max_open_alert          integer NOT NULL DEFAULT 0 CHECK (max_open_alert >= 0),
    imported_at             timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    activated_at            timestamptz,
    deactivated_at          timestamptz
);

-- One prediction of one active model for one coin as of one data timestamp.
CREATE TABLE predictions (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    active_model_id      bigint NOT NULL REFERENCES active_models (id) ON DELETE CASCADE,
    model_id             bigint NOT NULL,                        -- ml_models.id
    coin_id              varchar(64) NOT NULL,                   -- coin_metrics.mint
    data_timestamp       timestamptz NOT NULL,                   -- coin_metrics.timestamp of the tick
    phase_id             integer,
    prediction           smallint NOT NULL CHECK (prediction IN (0, 1)),
    probability          double precision NOT NULL CHECK (probability >= 0 AND probability <= 1),
    alert_threshold      double precision NOT NULL,
    tag                  text NOT NULL CHECK (tag IN ('negative', 'positive', 'alert')),
    -- Snapshot at T.
    price_close_at_t     double precision,
    market_cap_at_t      double precision,
    -- Target definition at prediction time: later model changes never rewrite history.
    target_kind          text NOT NULL CHECK (target_kind IN ('time_based', 'classic')),
    target_variable      text,
    target_operator      text,
    target_value         double precision,
    future_minutes       integer,
    price_change_percent double precision,
    target_direction     text,
    source               text NOT NULL DEFAULT 'stream' CHECK (source IN ('stream', 'manual')),
    predicted_at         timestamptz NOT NULL DEFAULT now(),
    evaluation_due_at    timestamptz NOT NULL,
    -- Outcome (NULL result = pending).
    evaluation_result    text CHECK (evaluation_result IN ('success', 'failed', 'not_applicable')),
    evaluation_reason    text,
    evaluated_at         timestamptz,
    price_close_at_eval  double precision,
    eval_price_timestamp timestamptz,
    actual_change_pct    double precision,
    max_gain_pct         double precision,
    max_gain_at          timestamptz,
    max_drawdown_pct     double precision,
    max_drawdown_at      timestamptz,
    CONSTRAINT predictions_once_per_tick UNIQUE (active_model_id, coin_id, data_timestamp)
);

CREATE INDEX predictions_pending_due ON predictions (evaluation_due_at)
    WHERE evaluation_result IS NULL;
CREATE INDEX predictions_coin_time ON predictions (coin_id, data_timestamp DESC);
CREATE INDEX predictions_model_time ON predictions (active_model_id, predicted_at DESC);
CREATE INDEX predictions_open_per_coin ON predictions (active_model_id, coin_id, tag)
    WHERE evaluation_result IS NULL;

-- Durable webhook outbox: written in the same transaction as the predictions it reports.
CREATE TABLE webhook_outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    target_url       text NOT NULL,
    coin_id          varchar(64) NOT NULL,
    data_timestamp   timestamptz NOT NULL,
    active_model_ids bigint[] NOT NULL,
    model_ids        bigint[] NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    locked_until     timestamptz,
    last_error       text,
    last_status_code integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);

CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_outbox_models ON webhook_outbox USING gin (active_model_ids);

-- Every delivery attempt, with the model ids it carried.
CREATE TABLE webhook_attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id        bigint NOT NULL REFERENCES webhook_outbox (id) ON DELETE CASCADE,
    attempt          integer NOT NULL,
    attempted_at     timestamptz NOT NULL DEFAULT now(),
    target_url       text NOT NULL,
    active_model_ids bigint[] NOT NULL,
    model_ids        bigint[] NOT NULL,
    status_code      integer,
    latency_ms       double precision,
    error            text,
    outcome          text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed', 'dead'))
);

CREATE INDEX webhook_attempts_models ON webhook_attempts USING gin (active_model_ids);
CREATE INDEX webhook_attempts_time ON webhook_attempts (attempted_at DESC);

-- Durable intake cursor over coin_metrics.id.
CREATE TABLE intake_cursor (
    name           text PRIMARY KEY,
    last_id        bigint NOT NULL DEFAULT 0,
    last_timestamp timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Per model and coin: the last result, for ignore windows.
CREATE TABLE coin_scan_state (
    active_model_id     bigint NOT NULL REFERENCES active_models (id) ON DELETE CASCADE,
    coin_id             varchar(64) NOT NULL,
    last_tag            text NOT NULL,
    last_data_timestamp timestamptz NOT NULL,
    ignore_until        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (active_model_id, coin_id)
);
