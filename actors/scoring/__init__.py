"""Scoring: ticks coalesced per coin into batches with their history (batcher, bus,
history, window and prefix caches), features computed once per batch, one predictor
per active model scoring the batch, every model's results of a batch stored with one
statement (batch writer), predictors kept in step with the database (model sync),
and predictions on request.

May use `actors.runtime`, `actors.shards` (the fences), `actors.webhooks.payload`
(what a prediction sends), `features` and `storage`.
"""
