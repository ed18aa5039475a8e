"""Webhooks: what an alert says and to whom (payload), which hosts may receive it
(targets), what to do after a POST (retry policy, pure), and the dispatcher that
delivers outbox jobs at least once.

May use `actors.runtime` and `storage`.
"""
