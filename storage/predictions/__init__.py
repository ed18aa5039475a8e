"""Queries on stored predictions: writes (stream and manual), reads for the API,
timeline, evaluation of outcomes, live statistics, per-coin scan state.

May use `storage.db`, `storage.outbox` (a manual prediction and its webhook jobs in
one statement), the top level of `storage` and `features`.
"""
