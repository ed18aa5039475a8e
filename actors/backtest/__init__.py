"""Backtests: recorded ticks scored as the stream would have scored them, then judged;
the CLI command, the API's queue runner and its worker process.

May use `actors.runtime`, `actors.scoring` (the stream's own scoring path, so a
backtest cannot drift from it), `actors.webhooks.payload`,
`features` and `storage`.
"""
