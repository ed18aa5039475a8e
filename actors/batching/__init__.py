"""Batching: ticks coalesced per coin into batches with their history, features computed
once per batch, and every model's results of a batch stored with one statement.

Owns the history, window and prefix caches. May use `actors.runtime`,
`actors.shards`, `features` and `storage`.
"""
