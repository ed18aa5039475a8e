"""Queries of the intake and of who holds what: the collector's `coin_metrics` (read
only), the durable cursor, coin shards with their leases and cursors, role leases.

May use `storage.db`, the top level of `storage` and `features` (column catalogue).
"""
