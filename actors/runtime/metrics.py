"""The Prometheus metrics catalogue: every metric the service exports, in one place.

Metrics are recorded by the actor that does the work, in the same process that
serves `/metrics` (the service being replaced exported metrics from a process
that did no work).
"""

from __future__ import annotations

from aioprometheus.collectors import Counter, Gauge, Histogram, Registry

REGISTRY = Registry()

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

# Supervision
ACTOR_RESTARTS = Counter(
    "pp_actor_restarts_total", "Actor crashes followed by a restart.", registry=REGISTRY
)
ACTOR_UP = Gauge("pp_actor_up", "1 while the actor is running.", registry=REGISTRY)

WORKERS_UP = Gauge(
    "pp_workers_running",
    "Worker processes running under this supervisor (serve --workers N).",
    registry=REGISTRY,
)
WORKER_RESTARTS = Counter(
    "pp_worker_restarts_total",
    "Worker processes that exited and were started again, by worker index.",
    registry=REGISTRY,
)

# Intake
LISTENER_UP = Gauge(
    "pp_listener_up", "1 while the LISTEN connection is healthy.", registry=REGISTRY
)
LISTENER_RECONNECTS = Counter(
    "pp_listener_reconnects_total", "Listener reconnects.", registry=REGISTRY
)
LISTENER_NOTIFICATION_AGE = Gauge(
    "pp_listener_last_notification_age_seconds",
    "Seconds since the last coin_metrics notification.",
    registry=REGISTRY,
)
NOTIFICATIONS = Counter("pp_notifications_total", "Notifications received.", registry=REGISTRY)
NOTIFICATION_QUEUE_USAGE = Gauge(
    "pp_pg_notification_queue_usage", "pg_notification_queue_usage() (0-1).", registry=REGISTRY
)
INTAKE_ROWS = Counter(
    "pp_intake_rows_total", "coin_metrics rows read by the poller.", registry=REGISTRY
)
INTAKE_POLLS = Counter("pp_intake_polls_total", "Poller reads, by trigger.", registry=REGISTRY)
INTAKE_CURSOR = Gauge(
    "pp_intake_cursor_id", "Durable intake cursor (coin_metrics.id).", registry=REGISTRY
)
SHARDS_HELD = Gauge(
    "pp_shards_held", "Coin shards this process holds a lease on.", registry=REGISTRY
)
ROLE_HELD = Gauge(
    "pp_role_held",
    "1 while this process holds the role (it runs the role's actors), else 0.",
    registry=REGISTRY,
)
ROLE_MOVES = Counter(
    "pp_role_moves_total",
    "Role leases gained, lost or released by this process, by role and direction.",
    registry=REGISTRY,
)
SHARD_MOVES = Counter(
    "pp_shard_moves_total",
    "Shard leases gained or lost by this process, by direction.",
    registry=REGISTRY,
)
SHARD_FENCED = Counter(
    "pp_shard_fenced_ticks_total",
    "Coin ticks not committed because their shard's lease was lost meanwhile.",
    registry=REGISTRY,
)
INTAKE_LAG = Histogram(
    "pp_intake_lag_seconds",
    "Now minus the data timestamp of a tick when it reaches the batcher.",
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
TICKS_RECEIVED = Counter(
    "pp_ticks_received_total", "Ticks received by the batcher.", registry=REGISTRY
)
BATCHES = Counter("pp_batches_total", "Batches flushed, by reason.", registry=REGISTRY)
BATCH_SIZE = Histogram(
    "pp_batch_size_coins", "Coins per batch.", registry=REGISTRY, buckets=SIZE_BUCKETS
)
BATCH_WAIT = Histogram(
    "pp_batch_wait_seconds",
    "Age of the oldest tick at flush.",
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
HISTORY_LOAD = Histogram(
    "pp_history_load_seconds",
    "Time to load the history of one batch.",
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)

# Predictions
ACTIVE_MODELS = Gauge(
    "pp_active_models", "Active models with a running predictor.", registry=REGISTRY
)
PREDICTIONS = Counter(
    "pp_predictions_total", "Predictions stored, by model and tag.", registry=REGISTRY
)
TICKS_SKIPPED = Counter(
    "pp_ticks_skipped_total",
    "Ticks a model did not predict, by model and reason.",
    registry=REGISTRY,
)
PREDICT_SECONDS = Histogram(
    "pp_predict_batch_seconds",
    "Time for one model to process one batch (features, inference, insert).",
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
PREDICTION_LAG = Histogram(
    "pp_prediction_lag_seconds",
    "Commit time of a prediction minus its data timestamp.",
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
MODEL_LOAD_FAILURES = Counter(
    "pp_model_load_failures_total", "Model files refused at load.", registry=REGISTRY
)

# Webhooks
WEBHOOK_SENT = Counter("pp_webhook_sent_total", "Webhook jobs delivered.", registry=REGISTRY)
WEBHOOK_FAILED = Counter(
    "pp_webhook_failed_total", "Failed webhook attempts, by reason.", registry=REGISTRY
)
WEBHOOK_RETRIED = Counter(
    "pp_webhook_retried_total", "Webhook attempts scheduled for retry.", registry=REGISTRY
)
WEBHOOK_DEAD = Counter("pp_webhook_dead_total", "Webhook jobs given up.", registry=REGISTRY)
WEBHOOK_WAITING = Counter(
    "pp_webhook_waiting_total",
    "Webhook jobs parked on a missing endpoint (404 beyond the grace).",
    registry=REGISTRY,
)
WEBHOOK_LATENCY = Histogram(
    "pp_webhook_delivery_seconds",
    "Duration of one webhook POST.",
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)
WEBHOOK_OUTBOX_DEPTH = Gauge("pp_webhook_outbox_depth", "Pending webhook jobs.", registry=REGISTRY)

# Evaluation
EVALUATIONS = Counter(
    "pp_evaluations_total", "Predictions evaluated, by result.", registry=REGISTRY
)
EVALUATION_ERRORS = Counter(
    "pp_evaluation_errors_total",
    "Evaluation cycles that failed and will be retried.",
    registry=REGISTRY,
)
EVALUATION_LAG = Gauge(
    "pp_evaluation_lag_seconds", "Age of the oldest due, unevaluated prediction.", registry=REGISTRY
)
MODEL_LIVE_SUCCESS_RATE = Gauge(
    "pp_model_live_success_rate",
    "Share of judged predictions that matched the outcome: success / (success + failed).",
    registry=REGISTRY,
)
MODEL_EVALUATED = Gauge(
    "pp_model_evaluated_predictions", "Evaluated predictions per model.", registry=REGISTRY
)

# Retention
RETENTION_DELETED = Counter(
    "pp_retention_deleted_rows_total",
    "Rows deleted by the retention actor, by table.",
    registry=REGISTRY,
)
RETENTION_ERRORS = Counter(
    "pp_retention_errors_total",
    "Retention passes that failed and will be retried.",
    registry=REGISTRY,
)

# HTTP
HTTP_REQUESTS = Counter(
    "pp_http_requests_total", "API requests, by route and status.", registry=REGISTRY
)
