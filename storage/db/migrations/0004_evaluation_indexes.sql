-- Reads of predictions by data time: the list (newest first, optionally by model) and
-- statistics over a data_timestamp range, without sorting the whole table per request.
CREATE INDEX IF NOT EXISTS predictions_data_time ON predictions (data_timestamp DESC, id DESC);
CREATE INDEX IF NOT EXISTS predictions_model_data_time
    ON predictions (active_model_id, data_timestamp DESC);
