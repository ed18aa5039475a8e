"""Storage: the database and model files; knows nothing of actors or HTTP.

Top-level modules are the lowest layer of the whole service, usable everywhere:
`config` (settings), `masking` (secrets), `text_rules` (accepted text), `refusals`
(start-up failures). Packages: `db` (pool, embedded server, migrations), one
query package per concern (`intake`, `predictions`, `outbox`, `models`,
`backtests`), `model_files` (store, safe load, fast inference) and `clients`
(the Training Service). May use `features` (column catalogue) and nothing else
of ours.
"""
