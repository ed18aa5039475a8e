"""Leases this process holds among replicas: its coin shards (the lease actor and the
shared set that intake and the writers fence on) and roles that run in one process
at a time (the role lease: housekeeping).

May use `actors.runtime` and `storage`.
"""
