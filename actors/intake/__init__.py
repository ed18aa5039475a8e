"""Intake: new `coin_metrics` rows become ticks (listener wake-ups, the cursor-driven
poller).

May use `actors.runtime`, `actors.shards` (which coins this process reads),
`storage` and `features`.
"""
