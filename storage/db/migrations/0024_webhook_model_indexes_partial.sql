-- Issue #19 (PostgreSQL CPU per coin tick): the GIN indexes on the model ids of every
-- webhook job and every attempt took ten entries per row, on the job's INSERT, again on
-- its settlement (never a HOT update: its status changes) and on its attempt's INSERT,
-- and their pending lists were merged by the inserting backends. They answered "this
-- model's jobs / attempts", which for a model that predicts every tick is every row
-- anyway (a bitmap of the whole table). What needs them is the rare rows an operator
-- looks for by model: dead and waiting jobs (the dead list, n8n-status, /health), and
-- attempts that failed (a model's last error). Delivered jobs and successful attempts,
-- nearly all rows, are no longer in them.
DROP INDEX webhook_outbox_models;
CREATE INDEX webhook_outbox_models ON webhook_outbox USING gin (active_model_ids)
    WHERE status IN ('dead', 'waiting');

DROP INDEX webhook_attempts_models;
CREATE INDEX webhook_attempts_models ON webhook_attempts USING gin (active_model_ids)
    WHERE outcome <> 'delivered';
