"""Queries of webhook delivery: the outbox queue, attempts, endpoint health, retention
of finished jobs.

May use `storage.db` and the top level of `storage`.
"""
