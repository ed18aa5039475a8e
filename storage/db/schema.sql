--
-- PostgreSQL database dump
--


SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: pp_shard_of(text, integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.pp_shard_of(mint text, shard_count integer) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (('x' || substr(md5(coalesce(mint, '')), 1, 8))::bit(32)::bigint
                  % shard_count)::integer $$;


--
-- Name: pump_predictor_notify_coin_metrics(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.pump_predictor_notify_coin_metrics() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    inserted bigint;
    newest bigint;
BEGIN
    SELECT count(*), max(id) INTO inserted, newest FROM pump_predictor_new_rows;
    IF inserted > 0 THEN
        PERFORM pg_notify(
            'coin_metrics_insert',
            json_build_object('rows', inserted, 'max_id', newest)::text
        );
    END IF;
    RETURN NULL;
END
$$;


--
-- Name: webhook_payload_expanded(jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.webhook_payload_expanded(payload jsonb) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT CASE WHEN jsonb_typeof(payload->'predictions') = 'array' THEN
        jsonb_set(payload, '{predictions}', coalesce((
            SELECT jsonb_agg(
                CASE WHEN t.key IS NOT NULL THEN (e.item - 'tail') || t.model_json::jsonb
                     WHEN s.key IS NOT NULL THEN jsonb_set(e.item, '{model}', s.model_json::jsonb)
                     ELSE e.item END
                ORDER BY e.ord)
            FROM jsonb_array_elements(payload->'predictions') WITH ORDINALITY AS e(item, ord)
            LEFT JOIN webhook_model_snapshots s ON s.key = e.item->'model'->>'snapshot'
            LEFT JOIN webhook_model_snapshots t ON t.key = e.item->>'tail'
        ), '[]'::jsonb))
    ELSE payload END
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: active_models; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.active_models (
    id bigint NOT NULL,
    model_id bigint NOT NULL,
    name text NOT NULL,
    custom_name text,
    model_type text NOT NULL,
    description text,
    target_kind text NOT NULL,
    target_variable text,
    target_operator text,
    target_value double precision,
    future_minutes integer,
    price_change_percent double precision,
    target_direction text,
    features jsonb NOT NULL,
    phases jsonb,
    params jsonb DEFAULT '{}'::jsonb NOT NULL,
    training_metrics jsonb DEFAULT '{}'::jsonb NOT NULL,
    file_path text NOT NULL,
    file_sha256 text NOT NULL,
    file_state text DEFAULT 'ok'::text NOT NULL,
    file_error text,
    is_active boolean DEFAULT true NOT NULL,
    alert_threshold double precision DEFAULT 0.7 NOT NULL,
    n8n_webhook_url text,
    n8n_enabled boolean DEFAULT true NOT NULL,
    n8n_send_modes text[] DEFAULT ARRAY['all'::text] NOT NULL,
    coin_filter_mode text DEFAULT 'all'::text NOT NULL,
    coin_whitelist text[] DEFAULT '{}'::text[] NOT NULL,
    ignore_negative_seconds integer DEFAULT 0 NOT NULL,
    ignore_positive_seconds integer DEFAULT 0 NOT NULL,
    ignore_alert_seconds integer DEFAULT 0 NOT NULL,
    max_open_negative integer DEFAULT 0 NOT NULL,
    max_open_positive integer DEFAULT 0 NOT NULL,
    max_open_alert integer DEFAULT 0 NOT NULL,
    imported_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    activated_at timestamp with time zone,
    deactivated_at timestamp with time zone,
    n8n_payload text,
    mode text DEFAULT 'live'::text NOT NULL,
    CONSTRAINT active_models_alert_threshold_check CHECK (((alert_threshold >= (0.5)::double precision) AND (alert_threshold <= (1.0)::double precision))),
    CONSTRAINT active_models_coin_filter_mode_check CHECK ((coin_filter_mode = ANY (ARRAY['all'::text, 'whitelist'::text]))),
    CONSTRAINT active_models_file_state_check CHECK ((file_state = ANY (ARRAY['ok'::text, 'missing'::text, 'redownloaded'::text, 'error'::text]))),
    CONSTRAINT active_models_ignore_alert_seconds_check CHECK (((ignore_alert_seconds >= 0) AND (ignore_alert_seconds <= 86400))),
    CONSTRAINT active_models_ignore_negative_seconds_check CHECK (((ignore_negative_seconds >= 0) AND (ignore_negative_seconds <= 86400))),
    CONSTRAINT active_models_ignore_positive_seconds_check CHECK (((ignore_positive_seconds >= 0) AND (ignore_positive_seconds <= 86400))),
    CONSTRAINT active_models_max_open_alert_check CHECK ((max_open_alert >= 0)),
    CONSTRAINT active_models_max_open_negative_check CHECK ((max_open_negative >= 0)),
    CONSTRAINT active_models_max_open_positive_check CHECK ((max_open_positive >= 0)),
    CONSTRAINT active_models_mode_check CHECK ((mode = ANY (ARRAY['live'::text, 'shadow'::text]))),
    CONSTRAINT active_models_model_type_check CHECK ((model_type = ANY (ARRAY['random_forest'::text, 'xgboost'::text]))),
    CONSTRAINT active_models_n8n_payload_check CHECK ((n8n_payload = ANY (ARRAY['full'::text, 'compact'::text]))),
    CONSTRAINT active_models_target_direction_check CHECK ((target_direction = ANY (ARRAY['up'::text, 'down'::text]))),
    CONSTRAINT active_models_target_kind_check CHECK ((target_kind = ANY (ARRAY['time_based'::text, 'classic'::text]))),
    CONSTRAINT active_models_target_operator_check CHECK ((target_operator = ANY (ARRAY['>'::text, '<'::text, '>='::text, '<='::text, '='::text])))
);


--
-- Name: active_models_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.active_models ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.active_models_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: backtest_ticks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.backtest_ticks (
    backtest_id bigint NOT NULL,
    mint text NOT NULL,
    "timestamp" timestamp with time zone NOT NULL,
    probability double precision NOT NULL,
    prediction smallint NOT NULL,
    tag text NOT NULL,
    outcome text NOT NULL,
    actual_change_pct double precision,
    max_gain_pct double precision,
    max_drawdown_pct double precision
);


--
-- Name: backtests; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.backtests (
    id bigint NOT NULL,
    model_id bigint NOT NULL,
    range_from timestamp with time zone,
    range_to timestamp with time zone,
    status text DEFAULT 'queued'::text NOT NULL,
    ticks_done bigint DEFAULT 0 NOT NULL,
    ticks_total bigint,
    summary jsonb,
    error text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    CONSTRAINT backtests_status_check CHECK ((status = ANY (ARRAY['queued'::text, 'running'::text, 'done'::text, 'failed'::text])))
);


--
-- Name: backtests_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.backtests_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: backtests_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.backtests_id_seq OWNED BY public.backtests.id;


--
-- Name: coin_metrics; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.coin_metrics (
    id bigint NOT NULL,
    mint character varying(64) NOT NULL,
    "timestamp" timestamp with time zone NOT NULL,
    phase_id_at_time integer,
    price_open numeric,
    price_high numeric,
    price_low numeric,
    price_close numeric,
    market_cap_close numeric(24,9),
    bonding_curve_pct numeric(10,4),
    virtual_sol_reserves numeric,
    is_koth boolean,
    volume_sol numeric,
    buy_volume_sol numeric,
    sell_volume_sol numeric,
    net_volume_sol numeric,
    num_buys integer,
    num_sells integer,
    unique_wallets integer,
    num_micro_trades integer,
    max_single_buy_sol numeric,
    max_single_sell_sol numeric,
    whale_buy_volume_sol numeric,
    whale_sell_volume_sol numeric,
    num_whale_buys integer,
    num_whale_sells integer,
    dev_sold_amount numeric,
    volatility_pct numeric(10,4),
    avg_trade_size_sol numeric,
    buy_pressure_ratio numeric(5,4),
    unique_signer_ratio numeric(5,4)
);


--
-- Name: coin_metrics_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.coin_metrics ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.coin_metrics_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: coin_scan_state; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.coin_scan_state (
    active_model_id bigint NOT NULL,
    coin_id character varying(64) NOT NULL,
    last_tag text NOT NULL,
    last_data_timestamp timestamp with time zone NOT NULL,
    ignore_until timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: intake_cursor; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.intake_cursor (
    name text NOT NULL,
    last_id bigint DEFAULT 0 NOT NULL,
    last_timestamp timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: ml_models; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ml_models (
    id bigint NOT NULL,
    name character varying(255) NOT NULL,
    model_type character varying(50) NOT NULL,
    status character varying(50) DEFAULT 'TRAINING'::character varying NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    is_deleted boolean DEFAULT false NOT NULL,
    target_variable character varying(100),
    target_operator character varying(5),
    target_value numeric,
    train_start timestamp with time zone,
    train_end timestamp with time zone,
    features jsonb DEFAULT '[]'::jsonb NOT NULL,
    phases jsonb,
    params jsonb,
    feature_importance jsonb,
    training_accuracy numeric,
    training_f1 numeric,
    training_precision numeric,
    training_recall numeric,
    roc_auc numeric,
    mcc numeric,
    fpr numeric,
    fnr numeric,
    confusion_matrix jsonb,
    simulated_profit_pct numeric,
    cv_scores jsonb,
    cv_overfitting_gap numeric,
    model_file_path text,
    description text,
    future_minutes integer,
    price_change_percent numeric,
    target_direction character varying(10)
);


--
-- Name: ml_models_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.ml_models ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (
    SEQUENCE NAME public.ml_models_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: prediction_due; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.prediction_due (
    tick_id bigint NOT NULL,
    horizon_s integer NOT NULL,
    variable text DEFAULT ''::text NOT NULL,
    due_at timestamp with time zone NOT NULL
);


--
-- Name: prediction_targets; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.prediction_targets (
    id integer NOT NULL,
    active_model_id bigint NOT NULL,
    model_id bigint NOT NULL,
    alert_threshold double precision NOT NULL,
    target_kind text NOT NULL,
    target_variable text,
    target_operator text,
    target_value double precision,
    future_minutes integer,
    price_change_percent double precision,
    target_direction text,
    horizon_s integer NOT NULL,
    outcome_variable text GENERATED ALWAYS AS (
CASE
    WHEN (target_kind = 'classic'::text) THEN COALESCE(target_variable, ''::text)
    ELSE ''::text
END) STORED NOT NULL,
    CONSTRAINT prediction_targets_target_kind_check CHECK ((target_kind = ANY (ARRAY['time_based'::text, 'classic'::text])))
);


--
-- Name: prediction_ticks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.prediction_ticks (
    id bigint NOT NULL,
    data_timestamp timestamp with time zone NOT NULL,
    predicted_at timestamp with time zone DEFAULT now() NOT NULL,
    price_close_at_t double precision,
    market_cap_at_t double precision,
    phase_id integer,
    source "char" NOT NULL,
    coin_id character varying(64) NOT NULL,
    target_ids integer[] NOT NULL,
    probabilities double precision[] NOT NULL,
    codes smallint[],
    ids bigint[],
    CONSTRAINT prediction_ticks_source_check CHECK ((source = ANY (ARRAY['s'::"char", 'm'::"char"]))),
    CONSTRAINT prediction_ticks_target_ids_check CHECK ((cardinality(target_ids) <= 1024))
);


--
-- Name: prediction_verdicts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.prediction_verdicts (
    id bigint NOT NULL,
    evaluation_result text NOT NULL,
    evaluation_reason text
);


--
-- Name: tick_outcomes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tick_outcomes (
    tick_id bigint NOT NULL,
    horizon_s integer NOT NULL,
    variable text DEFAULT ''::text NOT NULL,
    state smallint NOT NULL,
    evaluated_at timestamp with time zone DEFAULT now() NOT NULL,
    price_close_at_eval double precision,
    eval_price_timestamp timestamp with time zone,
    actual_change_pct double precision,
    max_gain_pct double precision,
    max_gain_at timestamp with time zone,
    max_drawdown_pct double precision,
    max_drawdown_at timestamp with time zone,
    variable_value numeric
);


--
-- Name: prediction_rows; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.prediction_rows AS
 SELECT COALESCE(t.ids[e.k], (((t.id * 1024) + e.k) - 1)) AS id,
    g.active_model_id,
    g.model_id,
    t.coin_id,
    t.data_timestamp,
    t.phase_id,
    d.prediction,
    e.probability,
    g.alert_threshold,
    d.tag,
    t.price_close_at_t,
    t.market_cap_at_t,
    g.target_kind,
    g.target_variable,
    g.target_operator,
    g.target_value,
    g.future_minutes,
    g.price_change_percent,
    g.target_direction,
        CASE t.source
            WHEN 'm'::"char" THEN 'manual'::text
            ELSE 'stream'::text
        END AS source,
    t.predicted_at,
    (t.data_timestamp + make_interval(secs => (g.horizon_s)::double precision)) AS evaluation_due_at,
        CASE
            WHEN (o.tick_id IS NULL) THEN NULL::text
            WHEN (kept.id IS NOT NULL) THEN kept.evaluation_result
            WHEN ((v.reason IS NOT NULL) OR (v.came_true IS NULL)) THEN 'not_applicable'::text
            WHEN ((d.prediction = 1) = v.came_true) THEN 'success'::text
            ELSE 'failed'::text
        END AS evaluation_result,
        CASE
            WHEN (o.tick_id IS NULL) THEN NULL::text
            WHEN (kept.id IS NOT NULL) THEN kept.evaluation_reason
            WHEN (v.reason IS NOT NULL) THEN v.reason
            WHEN (v.came_true IS NULL) THEN 'target could not be evaluated'::text
            ELSE NULL::text
        END AS evaluation_reason,
    o.evaluated_at,
    o.price_close_at_eval,
    o.eval_price_timestamp,
    o.actual_change_pct,
    o.max_gain_pct,
    o.max_gain_at,
    o.max_drawdown_pct,
    o.max_drawdown_at,
    t.id AS tick_id,
    g.horizon_s,
    g.outcome_variable
   FROM ((((((public.prediction_ticks t
     CROSS JOIN LATERAL UNNEST(t.target_ids, t.probabilities) WITH ORDINALITY e(target_id, probability, k))
     JOIN public.prediction_targets g ON ((g.id = e.target_id)))
     LEFT JOIN public.tick_outcomes o ON (((o.tick_id = t.id) AND (o.horizon_s = g.horizon_s) AND (o.variable = g.outcome_variable))))
     LEFT JOIN public.prediction_verdicts kept ON (((t.ids IS NOT NULL) AND (kept.id = t.ids[e.k]))))
     CROSS JOIN LATERAL ( SELECT (COALESCE(((t.codes[e.k])::integer % 2),
                CASE
                    WHEN (e.probability >= (0.5)::double precision) THEN 1
                    ELSE 0
                END))::smallint AS prediction,
                CASE COALESCE((t.codes[e.k] / 2),
                    CASE
                        WHEN (e.probability >= g.alert_threshold) THEN 2
                        WHEN (e.probability >= (0.5)::double precision) THEN 1
                        ELSE 0
                    END)
                    WHEN 0 THEN 'negative'::text
                    WHEN 1 THEN 'positive'::text
                    ELSE 'alert'::text
                END AS tag) d)
     CROSS JOIN LATERAL ( SELECT
                CASE
                    WHEN (o.state = 1) THEN 'no coin_metrics row for this coin at the prediction timestamp'::text
                    WHEN (COALESCE((NOT (((g.target_value)::numeric = (0)::numeric) OR ((abs((g.target_value)::numeric) >= 0.000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000022250738585072014) AND (abs((g.target_value)::numeric) <= '179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000'::numeric)))), false) OR COALESCE((NOT (((g.price_change_percent)::numeric = (0)::numeric) OR ((abs((g.price_change_percent)::numeric) >= 0.000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000022250738585072014) AND (abs((g.price_change_percent)::numeric) <= '179769313486231570000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000'::numeric)))), false)) THEN 'the target''s value or percent is NaN or infinite'::text
                    WHEN ((g.target_kind = 'time_based'::text) AND (o.state = 2)) THEN 'price_close at the prediction timestamp is NaN, infinite or out of range for double precision'::text
                    WHEN ((g.target_kind = 'time_based'::text) AND (o.state = 3)) THEN 'price_close at the prediction timestamp is NULL or 0'::text
                    WHEN ((g.target_kind = 'time_based'::text) AND (o.state = 4)) THEN 'price_close as of the evaluation time is NaN, infinite or out of range for double precision'::text
                    WHEN ((g.target_kind = 'time_based'::text) AND (o.state = 5)) THEN 'the price change is out of range for double precision'::text
                    WHEN ((g.target_kind = 'time_based'::text) AND ((g.target_direction IS NULL) OR (g.price_change_percent IS NULL))) THEN 'time-based target without direction or price_change_percent'::text
                    WHEN ((g.target_kind = 'classic'::text) AND ((g.target_operator IS NULL) OR (g.target_value IS NULL))) THEN 'classic target without operator or value'::text
                    WHEN ((g.target_kind = 'classic'::text) AND ((g.target_variable IS NULL) OR (o.state = 6))) THEN 'target_variable is not a numeric coin_metrics column'::text
                    WHEN ((g.target_kind = 'classic'::text) AND (o.state = 7)) THEN 'target_variable on the row at the prediction timestamp is NaN, infinite or out of range for double precision'::text
                    WHEN ((g.target_kind = 'classic'::text) AND (o.state = 8)) THEN 'target_variable is NULL on the row at the prediction timestamp'::text
                    ELSE NULL::text
                END AS reason,
                CASE
                    WHEN (g.target_kind = 'time_based'::text) THEN
                    CASE g.target_direction
                        WHEN 'up'::text THEN (o.actual_change_pct >= g.price_change_percent)
                        WHEN 'down'::text THEN (o.actual_change_pct <= (- g.price_change_percent))
                        ELSE NULL::boolean
                    END
                    ELSE
                    CASE g.target_operator
                        WHEN '>'::text THEN (o.variable_value > (g.target_value)::numeric)
                        WHEN '<'::text THEN (o.variable_value < (g.target_value)::numeric)
                        WHEN '>='::text THEN (o.variable_value >= (g.target_value)::numeric)
                        WHEN '<='::text THEN (o.variable_value <= (g.target_value)::numeric)
                        WHEN '='::text THEN (o.variable_value = (g.target_value)::numeric)
                        ELSE NULL::boolean
                    END
                END AS came_true) v);


--
-- Name: prediction_targets_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.prediction_targets ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.prediction_targets_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: prediction_ticks_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.prediction_ticks ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.prediction_ticks_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: predictions; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.predictions AS
 SELECT id,
    active_model_id,
    model_id,
    coin_id,
    data_timestamp,
    phase_id,
    prediction,
    probability,
    alert_threshold,
    tag,
    price_close_at_t,
    market_cap_at_t,
    target_kind,
    target_variable,
    target_operator,
    target_value,
    future_minutes,
    price_change_percent,
    target_direction,
    source,
    predicted_at,
    evaluation_due_at,
    evaluation_result,
    evaluation_reason,
    evaluated_at,
    price_close_at_eval,
    eval_price_timestamp,
    actual_change_pct,
    max_gain_pct,
    max_gain_at,
    max_drawdown_pct,
    max_drawdown_at
   FROM public.prediction_rows;


--
-- Name: ref_coin_phases; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ref_coin_phases (
    id integer NOT NULL,
    name character varying(64) NOT NULL,
    interval_seconds integer NOT NULL,
    min_age_minutes integer DEFAULT 0 NOT NULL,
    max_age_minutes integer DEFAULT 0 NOT NULL
);


--
-- Name: role_leases; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.role_leases (
    role text NOT NULL,
    holder text,
    host text,
    pid integer,
    generation bigint DEFAULT 0 NOT NULL,
    expires_at timestamp with time zone DEFAULT '-infinity'::timestamp with time zone NOT NULL,
    claimed_at timestamp with time zone
);


--
-- Name: schema_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schema_migrations (
    version text NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: shard_config; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.shard_config (
    singleton boolean DEFAULT true NOT NULL,
    shard_count integer NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT shard_config_shard_count_check CHECK (((shard_count >= 1) AND (shard_count <= 4096))),
    CONSTRAINT shard_config_singleton_check CHECK (singleton)
);


--
-- Name: shard_holders; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.shard_holders (
    holder text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone NOT NULL
);


--
-- Name: shard_leases; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.shard_leases (
    shard integer NOT NULL,
    holder text,
    generation bigint DEFAULT 0 NOT NULL,
    expires_at timestamp with time zone DEFAULT '-infinity'::timestamp with time zone NOT NULL,
    claimed_at timestamp with time zone,
    CONSTRAINT shard_leases_shard_check CHECK ((shard >= 0))
);


--
-- Name: webhook_attempts; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.webhook_attempts (
    id bigint NOT NULL,
    outbox_id bigint NOT NULL,
    attempt integer NOT NULL,
    attempted_at timestamp with time zone DEFAULT now() NOT NULL,
    target_url text NOT NULL,
    active_model_ids bigint[] NOT NULL,
    model_ids bigint[] NOT NULL,
    status_code integer,
    latency_ms double precision,
    error text,
    outcome text NOT NULL,
    CONSTRAINT webhook_attempts_outcome_check CHECK ((outcome = ANY (ARRAY['delivered'::text, 'retry'::text, 'failed'::text, 'dead'::text, 'wait'::text])))
);


--
-- Name: webhook_attempts_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.webhook_attempts ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.webhook_attempts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: webhook_endpoints; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.webhook_endpoints (
    target_url text NOT NULL,
    failing_since timestamp with time zone NOT NULL,
    missing_since timestamp with time zone,
    last_status_code integer,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: webhook_model_snapshots; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.webhook_model_snapshots (
    key text NOT NULL,
    model_json text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: COLUMN webhook_model_snapshots.key; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.webhook_model_snapshots.key IS 'sha256 of model_json: 64 hex digits for a model object, its first 32 for an item tail';


--
-- Name: COLUMN webhook_model_snapshots.model_json; Type: COMMENT; Schema: public; Owner: -
--

COMMENT ON COLUMN public.webhook_model_snapshots.model_json IS 'a model object exactly as sent, or an item tail: the members after an item''s probability';


--
-- Name: webhook_outbox; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.webhook_outbox (
    id bigint NOT NULL,
    idempotency_key text NOT NULL,
    target_url text NOT NULL,
    coin_id character varying(64) NOT NULL,
    data_timestamp timestamp with time zone NOT NULL,
    active_model_ids bigint[] NOT NULL,
    model_ids bigint[] NOT NULL,
    payload json NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    locked_until timestamp with time zone,
    last_error text,
    last_status_code integer,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    delivered_at timestamp with time zone,
    first_attempt_at timestamp with time zone,
    batch_key text,
    CONSTRAINT webhook_outbox_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'delivered'::text, 'dead'::text, 'waiting'::text])))
)
WITH (fillfactor='70');


--
-- Name: webhook_outbox_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.webhook_outbox ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.webhook_outbox_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: backtests id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.backtests ALTER COLUMN id SET DEFAULT nextval('public.backtests_id_seq'::regclass);


--
-- Name: active_models active_models_model_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.active_models
    ADD CONSTRAINT active_models_model_id_key UNIQUE (model_id);


--
-- Name: active_models active_models_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.active_models
    ADD CONSTRAINT active_models_pkey PRIMARY KEY (id);


--
-- Name: backtest_ticks backtest_ticks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.backtest_ticks
    ADD CONSTRAINT backtest_ticks_pkey PRIMARY KEY (backtest_id, "timestamp", mint);


--
-- Name: backtests backtests_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.backtests
    ADD CONSTRAINT backtests_pkey PRIMARY KEY (id);


--
-- Name: coin_metrics coin_metrics_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.coin_metrics
    ADD CONSTRAINT coin_metrics_pkey PRIMARY KEY (id);


--
-- Name: coin_scan_state coin_scan_state_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.coin_scan_state
    ADD CONSTRAINT coin_scan_state_pkey PRIMARY KEY (active_model_id, coin_id);


--
-- Name: intake_cursor intake_cursor_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.intake_cursor
    ADD CONSTRAINT intake_cursor_pkey PRIMARY KEY (name);


--
-- Name: ml_models ml_models_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ml_models
    ADD CONSTRAINT ml_models_pkey PRIMARY KEY (id);


--
-- Name: prediction_due prediction_due_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.prediction_due
    ADD CONSTRAINT prediction_due_pkey PRIMARY KEY (tick_id, horizon_s, variable);


--
-- Name: prediction_targets prediction_targets_once; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.prediction_targets
    ADD CONSTRAINT prediction_targets_once UNIQUE NULLS NOT DISTINCT (active_model_id, model_id, alert_threshold, target_kind, target_variable, target_operator, target_value, future_minutes, price_change_percent, target_direction, horizon_s);


--
-- Name: prediction_targets prediction_targets_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.prediction_targets
    ADD CONSTRAINT prediction_targets_pkey PRIMARY KEY (id);


--
-- Name: prediction_ticks prediction_ticks_once; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.prediction_ticks
    ADD CONSTRAINT prediction_ticks_once UNIQUE (coin_id, data_timestamp, source);


--
-- Name: prediction_ticks prediction_ticks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.prediction_ticks
    ADD CONSTRAINT prediction_ticks_pkey PRIMARY KEY (id);


--
-- Name: prediction_verdicts prediction_verdicts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.prediction_verdicts
    ADD CONSTRAINT prediction_verdicts_pkey PRIMARY KEY (id);


--
-- Name: ref_coin_phases ref_coin_phases_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ref_coin_phases
    ADD CONSTRAINT ref_coin_phases_pkey PRIMARY KEY (id);


--
-- Name: role_leases role_leases_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.role_leases
    ADD CONSTRAINT role_leases_pkey PRIMARY KEY (role);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: shard_config shard_config_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.shard_config
    ADD CONSTRAINT shard_config_pkey PRIMARY KEY (singleton);


--
-- Name: shard_holders shard_holders_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.shard_holders
    ADD CONSTRAINT shard_holders_pkey PRIMARY KEY (holder);


--
-- Name: shard_leases shard_leases_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.shard_leases
    ADD CONSTRAINT shard_leases_pkey PRIMARY KEY (shard);


--
-- Name: tick_outcomes tick_outcomes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tick_outcomes
    ADD CONSTRAINT tick_outcomes_pkey PRIMARY KEY (tick_id, horizon_s, variable);


--
-- Name: webhook_attempts webhook_attempts_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_attempts
    ADD CONSTRAINT webhook_attempts_pkey PRIMARY KEY (id);


--
-- Name: webhook_endpoints webhook_endpoints_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_endpoints
    ADD CONSTRAINT webhook_endpoints_pkey PRIMARY KEY (target_url);


--
-- Name: webhook_model_snapshots webhook_model_snapshots_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_model_snapshots
    ADD CONSTRAINT webhook_model_snapshots_pkey PRIMARY KEY (key);


--
-- Name: webhook_outbox webhook_outbox_idempotency_key_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_outbox
    ADD CONSTRAINT webhook_outbox_idempotency_key_key UNIQUE (idempotency_key);


--
-- Name: webhook_outbox webhook_outbox_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_outbox
    ADD CONSTRAINT webhook_outbox_pkey PRIMARY KEY (id);


--
-- Name: backtests_queued; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX backtests_queued ON public.backtests USING btree (id) WHERE (status = 'queued'::text);


--
-- Name: coin_metrics_mint_timestamp_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX coin_metrics_mint_timestamp_idx ON public.coin_metrics USING btree (mint, "timestamp");


--
-- Name: prediction_due_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX prediction_due_at ON public.prediction_due USING btree (due_at);


--
-- Name: prediction_ticks_data_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX prediction_ticks_data_time ON public.prediction_ticks USING btree (data_timestamp);


--
-- Name: prediction_ticks_old_ids; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX prediction_ticks_old_ids ON public.prediction_ticks USING gin (ids) WHERE (ids IS NOT NULL);


--
-- Name: webhook_attempts_models; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_attempts_models ON public.webhook_attempts USING gin (active_model_ids) WHERE (outcome <> 'delivered'::text);


--
-- Name: webhook_attempts_outbox; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_attempts_outbox ON public.webhook_attempts USING btree (outbox_id);


--
-- Name: webhook_attempts_recent_losses; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_attempts_recent_losses ON public.webhook_attempts USING btree (attempted_at) WHERE (outcome = ANY (ARRAY['dead'::text, 'failed'::text, 'wait'::text]));


--
-- Name: webhook_attempts_time; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_attempts_time ON public.webhook_attempts USING btree (attempted_at DESC);


--
-- Name: webhook_outbox_batch; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_outbox_batch ON public.webhook_outbox USING btree (batch_key) WHERE ((batch_key IS NOT NULL) AND (status = 'pending'::text));


--
-- Name: webhook_outbox_due_order; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_outbox_due_order ON public.webhook_outbox USING btree (next_attempt_at, id) WHERE (status = 'pending'::text);


--
-- Name: webhook_outbox_models; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_outbox_models ON public.webhook_outbox USING gin (active_model_ids) WHERE (status = ANY (ARRAY['dead'::text, 'waiting'::text]));


--
-- Name: webhook_outbox_pending_tick; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_outbox_pending_tick ON public.webhook_outbox USING btree (coin_id, data_timestamp) WHERE (status = 'pending'::text);


--
-- Name: webhook_outbox_waiting; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX webhook_outbox_waiting ON public.webhook_outbox USING btree (target_url) WHERE (status = 'waiting'::text);


--
-- Name: coin_metrics pump_predictor_notify; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER pump_predictor_notify AFTER INSERT ON public.coin_metrics REFERENCING NEW TABLE AS pump_predictor_new_rows FOR EACH STATEMENT EXECUTE FUNCTION public.pump_predictor_notify_coin_metrics();


--
-- Name: backtest_ticks backtest_ticks_backtest_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.backtest_ticks
    ADD CONSTRAINT backtest_ticks_backtest_id_fkey FOREIGN KEY (backtest_id) REFERENCES public.backtests(id) ON DELETE CASCADE;


--
-- Name: coin_scan_state coin_scan_state_active_model_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.coin_scan_state
    ADD CONSTRAINT coin_scan_state_active_model_id_fkey FOREIGN KEY (active_model_id) REFERENCES public.active_models(id) ON DELETE CASCADE;


--
-- Name: prediction_targets prediction_targets_active_model_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.prediction_targets
    ADD CONSTRAINT prediction_targets_active_model_id_fkey FOREIGN KEY (active_model_id) REFERENCES public.active_models(id) ON DELETE CASCADE;


--
-- Name: tick_outcomes tick_outcomes_tick_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tick_outcomes
    ADD CONSTRAINT tick_outcomes_tick_id_fkey FOREIGN KEY (tick_id) REFERENCES public.prediction_ticks(id) ON DELETE CASCADE;


--
-- Name: webhook_attempts webhook_attempts_outbox_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.webhook_attempts
    ADD CONSTRAINT webhook_attempts_outbox_id_fkey FOREIGN KEY (outbox_id) REFERENCES public.webhook_outbox(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--

