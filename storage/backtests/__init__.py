"""Queries of backtests: requests, progress, summaries and ticks, and the recorded rows
a backtest reads.

May use `storage.db`, `storage.intake`, `storage.predictions`, the top level of
`storage` and `features`.
"""
