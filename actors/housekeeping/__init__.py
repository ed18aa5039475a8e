"""Housekeeping: the periodic sweeps of the database (the evaluator writes outcomes,
retention deletes finished webhook jobs).

May use `actors.runtime` and `storage`.
"""
