"""The database itself: the asyncpg pool and its codecs, where the database comes from
(`DB_DSN` or the embedded server), migrations and their `.sql` files, outage rules,
generic query helpers.

May use the top-level modules of `storage` only.
"""
