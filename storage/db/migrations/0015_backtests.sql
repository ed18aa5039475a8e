-- Backtests requested through the API: run by a worker process, one at a time.
-- A row is the request, its progress and, once done, its summary; its ticks are
-- in backtest_ticks. Deleting the row cancels a running backtest (the worker sees
-- its row gone) and removes its ticks.
CREATE TABLE backtests (
    id              bigserial PRIMARY KEY,
    model_id        bigint NOT NULL,            -- Training Service model (ml_models.id)
    range_from      timestamptz,
    range_to        timestamptz,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'done', 'failed')),
    ticks_done      bigint NOT NULL DEFAULT 0,
    ticks_total     bigint,
    summary         jsonb,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX backtests_queued ON backtests (id) WHERE status = 'queued';

CREATE TABLE backtest_ticks (
    backtest_id       bigint NOT NULL REFERENCES backtests (id) ON DELETE CASCADE,
    mint              text NOT NULL,
    "timestamp"       timestamptz NOT NULL,
    probability       double precision NOT NULL,
    prediction        smallint NOT NULL,
    tag               text NOT NULL,
    outcome           text NOT NULL,
    actual_change_pct double precision,
    max_gain_pct      double precision,
    max_drawdown_pct  double precision,
    PRIMARY KEY (backtest_id, "timestamp", mint)
);
