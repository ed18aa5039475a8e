-- Prediction store (issue 19, docs/prediction-store.md): a coin tick is stored once with
-- every model's probability in arrays, a model version's target definition once, the
-- outcome of a price path once per (tick, horizon[, classic variable]), and a view named
-- `predictions` gives every reader today's columns, the verdict derived in SQL.
-- The existing rows move in this same transaction: an upgraded database never shows
-- half of them.

ALTER TABLE predictions RENAME TO predictions_v1;

-- A model version's target definition: written once, referenced, never rewritten, so
-- history keeps the definition it was predicted with. `horizon_s` = evaluation_due_at
-- - data_timestamp; `outcome_variable` names the outcome row a prediction is judged on.
CREATE TABLE prediction_targets (
    id                   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    active_model_id      bigint NOT NULL REFERENCES active_models (id) ON DELETE CASCADE,
    model_id             bigint NOT NULL,
    alert_threshold      double precision NOT NULL,
    target_kind          text NOT NULL CHECK (target_kind IN ('time_based', 'classic')),
    target_variable      text,
    target_operator      text,
    target_value         double precision,
    future_minutes       integer,
    price_change_percent double precision,
    target_direction     text,
    horizon_s            integer NOT NULL,
    outcome_variable     text NOT NULL GENERATED ALWAYS AS (
        CASE WHEN target_kind = 'classic' THEN coalesce(target_variable, '') ELSE '' END
    ) STORED,
    CONSTRAINT prediction_targets_once UNIQUE NULLS NOT DISTINCT (
        active_model_id, model_id, alert_threshold, target_kind, target_variable,
        target_operator, target_value, future_minutes, price_change_percent,
        target_direction, horizon_s)
);

-- A coin tick, once per source ('s'tream, 'm'anual), with every model's result on it:
-- element k of target_ids / probabilities is one prediction, its id tick id * 1024 + k - 1
-- (migrated predictions keep their old id in `ids`). `codes` is NULL unless a prediction's
-- class or tag does not follow from its probability: then code = prediction + 2 * tag
-- (0 negative, 1 positive, 2 alert), NULL elements following from p.
CREATE TABLE prediction_ticks (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data_timestamp   timestamptz NOT NULL,
    predicted_at     timestamptz NOT NULL DEFAULT now(),
    price_close_at_t double precision,
    market_cap_at_t  double precision,
    phase_id         integer,
    source           "char" NOT NULL CHECK (source IN ('s', 'm')),
    coin_id          varchar(64) NOT NULL,
    target_ids       integer[] NOT NULL CHECK (cardinality(target_ids) <= 1024),
    probabilities    double precision[] NOT NULL,
    codes            smallint[],
    ids              bigint[],
    CONSTRAINT prediction_ticks_once UNIQUE (coin_id, data_timestamp, source)
);
CREATE INDEX prediction_ticks_data_time ON prediction_ticks (data_timestamp);
CREATE INDEX prediction_ticks_old_ids ON prediction_ticks USING gin (ids) WHERE ids IS NOT NULL;

-- The outcome of a coin's price path from T to T + horizon, shared by every model with
-- that horizon (and, for classic targets, that variable). `state` is the first reason
-- the path cannot judge a target: 0 none, 1 no row at T, 2 price at T out of range,
-- 3 no price at T, 4 price as of the due time out of range, 5 change out of range,
-- 6 unknown variable, 7 variable out of range, 8 variable NULL (6-8: classic rows only).
CREATE TABLE tick_outcomes (
    tick_id              bigint NOT NULL REFERENCES prediction_ticks (id) ON DELETE CASCADE,
    horizon_s            integer NOT NULL,
    variable             text NOT NULL DEFAULT '',
    state                smallint NOT NULL,
    evaluated_at         timestamptz NOT NULL DEFAULT now(),
    price_close_at_eval  double precision,
    eval_price_timestamp timestamptz,
    actual_change_pct    double precision,
    max_gain_pct         double precision,
    max_gain_at          timestamptz,
    max_drawdown_pct     double precision,
    max_drawdown_at      timestamptz,
    variable_value       numeric,
    PRIMARY KEY (tick_id, horizon_s, variable)
);

-- What the evaluator still has to do: one row per (tick, horizon, variable) without an
-- outcome, deleted by the pass that writes it (so it holds a window's worth of ticks).
CREATE TABLE prediction_due (
    tick_id   bigint NOT NULL,
    horizon_s integer NOT NULL,
    variable  text NOT NULL DEFAULT '',
    due_at    timestamptz NOT NULL,
    PRIMARY KEY (tick_id, horizon_s, variable)
);
CREATE INDEX prediction_due_at ON prediction_due (due_at);

-- Verdicts of migrated predictions that the rules would not derive from their stored
-- outcome (older rules, hand-written outcomes): kept as they were, by prediction id.
CREATE TABLE prediction_verdicts (
    id                bigint PRIMARY KEY,
    evaluation_result text NOT NULL,
    evaluation_reason text
);

-- One row per prediction with today's columns (and its tick id for the evaluator).
CREATE VIEW prediction_rows AS
SELECT coalesce(t.ids[e.k], t.id * 1024 + e.k - 1) AS id,
       g.active_model_id, g.model_id, t.coin_id, t.data_timestamp, t.phase_id,
       d.prediction, e.probability, g.alert_threshold, d.tag,
       t.price_close_at_t, t.market_cap_at_t,
       g.target_kind, g.target_variable, g.target_operator, g.target_value,
       g.future_minutes, g.price_change_percent, g.target_direction,
       CASE t.source WHEN 'm' THEN 'manual' ELSE 'stream' END AS source,
       t.predicted_at,
       t.data_timestamp + make_interval(secs => g.horizon_s) AS evaluation_due_at,
       CASE
           WHEN o.tick_id IS NULL THEN NULL
           WHEN kept.id IS NOT NULL THEN kept.evaluation_result
           WHEN v.reason IS NOT NULL OR v.came_true IS NULL THEN 'not_applicable'
           WHEN (d.prediction = 1) = v.came_true THEN 'success'
           ELSE 'failed'
       END AS evaluation_result,
       CASE
           WHEN o.tick_id IS NULL THEN NULL
           WHEN kept.id IS NOT NULL THEN kept.evaluation_reason
           WHEN v.reason IS NOT NULL THEN v.reason
           WHEN v.came_true IS NULL THEN 'target could not be evaluated'
       END AS evaluation_reason,
       o.evaluated_at, o.price_close_at_eval, o.eval_price_timestamp, o.actual_change_pct,
       o.max_gain_pct, o.max_gain_at, o.max_drawdown_pct, o.max_drawdown_at,
       t.id AS tick_id, g.horizon_s, g.outcome_variable
FROM prediction_ticks t
CROSS JOIN LATERAL unnest(t.target_ids, t.probabilities)
    WITH ORDINALITY AS e(target_id, probability, k)
JOIN prediction_targets g ON g.id = e.target_id
LEFT JOIN tick_outcomes o
    ON o.tick_id = t.id AND o.horizon_s = g.horizon_s AND o.variable = g.outcome_variable
LEFT JOIN prediction_verdicts kept ON t.ids IS NOT NULL AND kept.id = t.ids[e.k]
CROSS JOIN LATERAL (
    SELECT coalesce(t.codes[e.k] % 2, CASE WHEN e.probability >= 0.5 THEN 1 ELSE 0 END)::smallint
               AS prediction,
           CASE coalesce(t.codes[e.k] / 2,
                         CASE WHEN e.probability >= g.alert_threshold THEN 2
                              WHEN e.probability >= 0.5 THEN 1 ELSE 0 END)
               WHEN 0 THEN 'negative' WHEN 1 THEN 'positive' ELSE 'alert'
           END AS tag
) d
CROSS JOIN LATERAL (
    SELECT CASE
               WHEN o.state = 1
                   THEN 'no coin_metrics row for this coin at the prediction timestamp'
               WHEN coalesce(NOT (g.target_value::numeric = 0 OR abs(g.target_value::numeric)
                        BETWEEN 2.2250738585072014e-308 AND 1.7976931348623157e308), false)
                    OR coalesce(NOT (g.price_change_percent::numeric = 0
                        OR abs(g.price_change_percent::numeric)
                        BETWEEN 2.2250738585072014e-308 AND 1.7976931348623157e308), false)
                   THEN 'the target''s value or percent is NaN or infinite'
               WHEN g.target_kind = 'time_based' AND o.state = 2
                   THEN 'price_close at the prediction timestamp is NaN, infinite or out of'
                        ' range for double precision'
               WHEN g.target_kind = 'time_based' AND o.state = 3
                   THEN 'price_close at the prediction timestamp is NULL or 0'
               WHEN g.target_kind = 'time_based' AND o.state = 4
                   THEN 'price_close as of the evaluation time is NaN, infinite or out of'
                        ' range for double precision'
               WHEN g.target_kind = 'time_based' AND o.state = 5
                   THEN 'the price change is out of range for double precision'
               WHEN g.target_kind = 'time_based'
                    AND (g.target_direction IS NULL OR g.price_change_percent IS NULL)
                   THEN 'time-based target without direction or price_change_percent'
               WHEN g.target_kind = 'classic'
                    AND (g.target_operator IS NULL OR g.target_value IS NULL)
                   THEN 'classic target without operator or value'
               WHEN g.target_kind = 'classic' AND (g.target_variable IS NULL OR o.state = 6)
                   THEN 'target_variable is not a numeric coin_metrics column'
               WHEN g.target_kind = 'classic' AND o.state = 7
                   THEN 'target_variable on the row at the prediction timestamp is NaN,'
                        ' infinite or out of range for double precision'
               WHEN g.target_kind = 'classic' AND o.state = 8
                   THEN 'target_variable is NULL on the row at the prediction timestamp'
           END AS reason,
           CASE
               WHEN g.target_kind = 'time_based' THEN
                   CASE g.target_direction
                       WHEN 'up' THEN o.actual_change_pct >= g.price_change_percent
                       WHEN 'down' THEN o.actual_change_pct <= -g.price_change_percent
                   END
               ELSE
                   CASE g.target_operator
                       WHEN '>' THEN o.variable_value > g.target_value::numeric
                       WHEN '<' THEN o.variable_value < g.target_value::numeric
                       WHEN '>=' THEN o.variable_value >= g.target_value::numeric
                       WHEN '<=' THEN o.variable_value <= g.target_value::numeric
                       WHEN '=' THEN o.variable_value = g.target_value::numeric
                   END
           END AS came_true
) v;

-- Today's columns, for every reader (the API, statistics, the dashboard, webhooks).
CREATE VIEW predictions AS
SELECT id, active_model_id, model_id, coin_id, data_timestamp, phase_id, prediction,
       probability, alert_threshold, tag, price_close_at_t, market_cap_at_t, target_kind,
       target_variable, target_operator, target_value, future_minutes,
       price_change_percent, target_direction, source, predicted_at, evaluation_due_at,
       evaluation_result, evaluation_reason, evaluated_at, price_close_at_eval,
       eval_price_timestamp, actual_change_pct, max_gain_pct, max_gain_at,
       max_drawdown_pct, max_drawdown_at
FROM prediction_rows;

-- ---- moving the existing rows -------------------------------------------------------

-- Every tick id times 1024 lies above every old prediction id: new ids never collide.
SELECT setval(pg_get_serial_sequence('prediction_ticks', 'id'),
              (SELECT coalesce(max(id), 0) / 1024 + 1 FROM predictions_v1));

INSERT INTO prediction_targets (active_model_id, model_id, alert_threshold, target_kind,
    target_variable, target_operator, target_value, future_minutes, price_change_percent,
    target_direction, horizon_s)
SELECT DISTINCT active_model_id, model_id, alert_threshold, target_kind, target_variable,
       target_operator, target_value, future_minutes, price_change_percent, target_direction,
       round(extract(epoch FROM evaluation_due_at - data_timestamp))::integer
FROM predictions_v1
ON CONFLICT ON CONSTRAINT prediction_targets_once DO NOTHING;

CREATE TEMPORARY TABLE moved ON COMMIT DROP AS
SELECT p.*, g.id AS target_id, g.horizon_s, g.outcome_variable,
       CASE WHEN p.prediction = CASE WHEN p.probability >= 0.5 THEN 1 ELSE 0 END
                 AND p.tag = CASE WHEN p.probability >= p.alert_threshold THEN 'alert'
                                  WHEN p.probability >= 0.5 THEN 'positive'
                                  ELSE 'negative' END
            THEN NULL
            ELSE (p.prediction + 2 * CASE p.tag WHEN 'negative' THEN 0 WHEN 'positive' THEN 1
                                                ELSE 2 END)::smallint
       END AS code
FROM predictions_v1 p
JOIN prediction_targets g
    ON (g.active_model_id, g.model_id, g.alert_threshold, g.target_kind, g.horizon_s)
       = (p.active_model_id, p.model_id, p.alert_threshold, p.target_kind,
          round(extract(epoch FROM p.evaluation_due_at - p.data_timestamp))::integer)
   AND g.target_variable IS NOT DISTINCT FROM p.target_variable
   AND g.target_operator IS NOT DISTINCT FROM p.target_operator
   AND g.target_value IS NOT DISTINCT FROM p.target_value
   AND g.future_minutes IS NOT DISTINCT FROM p.future_minutes
   AND g.price_change_percent IS NOT DISTINCT FROM p.price_change_percent
   AND g.target_direction IS NOT DISTINCT FROM p.target_direction;

-- A tick's snapshot columns are equal on its rows; predicted_at becomes the earliest.
INSERT INTO prediction_ticks (coin_id, data_timestamp, source, phase_id, price_close_at_t,
    market_cap_at_t, predicted_at, target_ids, probabilities, codes, ids)
SELECT coin_id, data_timestamp, CASE source WHEN 'manual' THEN 'm' ELSE 's' END::"char",
       (array_agg(phase_id ORDER BY id))[1],
       (array_agg(price_close_at_t ORDER BY id))[1],
       (array_agg(market_cap_at_t ORDER BY id))[1],
       min(predicted_at),
       array_agg(target_id ORDER BY id),
       array_agg(probability ORDER BY id),
       CASE WHEN bool_or(code IS NOT NULL) THEN array_agg(code ORDER BY id) END,
       array_agg(id ORDER BY id)
FROM moved
GROUP BY coin_id, data_timestamp, source;

-- One outcome per (tick, horizon, variable): where models' stored outcomes of one path
-- differ, the earliest evaluation wins (their own verdicts are kept below).
INSERT INTO tick_outcomes (tick_id, horizon_s, variable, state, evaluated_at,
    price_close_at_eval, eval_price_timestamp, actual_change_pct, max_gain_pct, max_gain_at,
    max_drawdown_pct, max_drawdown_at)
SELECT DISTINCT ON (t.id, m.horizon_s, m.outcome_variable)
       t.id, m.horizon_s, m.outcome_variable,
       CASE m.evaluation_reason
           WHEN 'no coin_metrics row for this coin at the prediction timestamp' THEN 1
           WHEN 'price_close at the prediction timestamp is NaN, infinite or out of range'
                ' for double precision' THEN 2
           WHEN 'price_close at the prediction timestamp is NULL or 0' THEN 3
           WHEN 'price_close as of the evaluation time is NaN, infinite or out of range'
                ' for double precision' THEN 4
           WHEN 'the price change is out of range for double precision' THEN 5
           WHEN 'target_variable is not a numeric coin_metrics column' THEN 6
           WHEN 'target_variable on the row at the prediction timestamp is NaN, infinite or'
                ' out of range for double precision' THEN 7
           WHEN 'target_variable is NULL on the row at the prediction timestamp' THEN 8
           ELSE 0
       END,
       coalesce(m.evaluated_at, now()), m.price_close_at_eval, m.eval_price_timestamp,
       m.actual_change_pct, m.max_gain_pct, m.max_gain_at, m.max_drawdown_pct,
       m.max_drawdown_at
FROM moved m
JOIN prediction_ticks t
    ON t.coin_id = m.coin_id AND t.data_timestamp = m.data_timestamp
   AND t.source = CASE m.source WHEN 'manual' THEN 'm' ELSE 's' END::"char"
WHERE m.evaluation_result IS NOT NULL
ORDER BY t.id, m.horizon_s, m.outcome_variable, m.evaluated_at, m.id;

-- Pending predictions whose path has no outcome yet go to the evaluator's queue.
INSERT INTO prediction_due (tick_id, horizon_s, variable, due_at)
SELECT DISTINCT t.id, m.horizon_s, m.outcome_variable,
       m.data_timestamp + make_interval(secs => m.horizon_s)
FROM moved m
JOIN prediction_ticks t
    ON t.coin_id = m.coin_id AND t.data_timestamp = m.data_timestamp
   AND t.source = CASE m.source WHEN 'manual' THEN 'm' ELSE 's' END::"char"
WHERE m.evaluation_result IS NULL
  AND NOT EXISTS (
    SELECT 1 FROM tick_outcomes o
    WHERE o.tick_id = t.id AND o.horizon_s = m.horizon_s AND o.variable = m.outcome_variable
  );

-- A stored verdict the rules do not derive from the kept outcome stays as it was.
INSERT INTO prediction_verdicts (id, evaluation_result, evaluation_reason)
SELECT m.id, m.evaluation_result, m.evaluation_reason
FROM moved m
JOIN prediction_rows r ON r.id = m.id
WHERE m.evaluation_result IS NOT NULL
  AND (r.evaluation_result IS DISTINCT FROM m.evaluation_result
       OR r.evaluation_reason IS DISTINCT FROM m.evaluation_reason);

DO $$
DECLARE
    before bigint := (SELECT count(*) FROM predictions_v1);
    after bigint := (SELECT count(*) FROM predictions);
BEGIN
    IF before <> after THEN
        RAISE EXCEPTION 'prediction store migration: % rows before, % after', before, after;
    END IF;
END $$;

DROP TABLE predictions_v1;
