"""Prediction: one predictor per active model, the runnable model, keeping predictors
in step with the database (model sync), and predictions on request.

May use `actors.runtime`, `actors.batching` (the batch bus and writer it feeds),
`actors.shards`, `features` and `storage`.
"""
