"""The running system: actors in one package per capability.

`runtime` (supervision, messages, metrics, logs, live state) is the lowest layer;
the capabilities (`intake`, `shards`, `scoring`, `webhooks`, `housekeeping`,
`backtest`) sit on it and on `features` and `storage`; `app` is
the composition root that wires them into a process. docs/architecture.md has the
tree and the path of a tick.
"""
