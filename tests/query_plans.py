"""The plans PostgreSQL makes for the queries our storage functions really send.

A test runs a storage function on a `RecordingConnection`; every statement it sent
(through asyncpg's query logger, and COPY (query) TO STDOUT, which the logger does
not see) is kept with its arguments. `plans()` then asks PostgreSQL for the plan of
each: with the arguments (the custom plan a first run gets) and, for prepared
statements, the generic plan asyncpg's statement cache may settle on after five
runs. Nothing is parsed out of our SQL by hand, so a test follows the code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from asyncpg.connection import LoggedQuery

from storage.db.pool import connect

INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}


@dataclass(frozen=True)
class SentQuery:
    sql: str
    args: tuple[Any, ...]
    prepared: bool  # False for COPY, whose arguments asyncpg writes into the text


class RecordingConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection that keeps every query it sends (the database runs them)."""

    sent: list[SentQuery]

    def start_recording(self) -> None:
        self.sent = []
        self.add_query_logger(self._logged)

    def stop_recording(self) -> list[SentQuery]:
        self.remove_query_logger(self._logged)
        return self.sent

    def _logged(self, record: LoggedQuery) -> None:
        self.sent.append(SentQuery(record.query, tuple(record.args or ()), prepared=True))

    async def copy_from_query(self, query: str, *args: Any, **options: Any) -> Any:
        if hasattr(self, "sent"):
            self.sent.append(SentQuery(query, args, prepared=False))
        return await super().copy_from_query(query, *args, **options)


async def recording_connection(dsn: str) -> RecordingConnection:
    conn: RecordingConnection = await connect(dsn, connection_class=RecordingConnection)
    return conn


@dataclass
class Plan:
    """One query's plan tree (EXPLAIN FORMAT JSON), and what it scans."""

    sql: str
    kind: str  # "custom" (planned with the arguments) or "generic"
    tree: dict[str, Any]
    nodes: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = list(_walk(self.tree))

    def scans_of(self, table: str, indexes: dict[str, str]) -> list[str]:
        """How each scan reaches `table`: "Seq Scan", "<node type> <index name>", or
        "<node type> <index name> (whole index)" when no condition bounds the index
        (a walk of all of it with a filter). `indexes` maps index names to their table
        (Bitmap Index Scans name no table)."""
        found = []
        for node in self.nodes:
            relation = node.get("Relation Name") or indexes.get(node.get("Index Name", ""))
            if relation != table or node["Node Type"] == "Bitmap Heap Scan":
                continue
            if "Index Name" not in node:
                found.append(node["Node Type"])
            elif "Index Cond" in node:
                found.append(f"{node['Node Type']} {node['Index Name']}")
            else:
                found.append(f"{node['Node Type']} {node['Index Name']} (whole index)")
        return found

    def __str__(self) -> str:
        lines = []
        for node in self.nodes:
            where = node.get("Index Name") or node.get("Relation Name") or ""
            lines.append(f"{node['Node Type']} {where} rows={node.get('Plan Rows')}".rstrip())
        return f"{self.kind} plan of {' '.join(self.sql.split())[:160]}…: " + "; ".join(lines)


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


async def plans(conn: asyncpg.Connection, sent: list[SentQuery], table: str) -> list[Plan]:
    """The custom plan of every sent query that reads `table`, and the generic plan of
    the prepared ones. Plans are read in a transaction that is rolled back."""
    found: list[Plan] = []
    seen: set[str] = set()
    for query in sent:
        if table not in query.sql or query.sql in seen:
            continue  # a bisection sends one statement many times: its first run stands
        seen.add(query.sql)
        transaction = conn.transaction()
        await transaction.start()
        try:
            tree = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query.sql}", *query.args)
            found.append(Plan(query.sql, "custom", _root(tree)))
            if query.prepared:
                found.append(Plan(query.sql, "generic", await _generic(conn, query)))
        finally:
            await transaction.rollback()
    return found


async def _generic(conn: asyncpg.Connection, query: SentQuery) -> dict[str, Any]:
    statement = await conn.prepare(query.sql)
    types = [
        await conn.fetchval("SELECT format_type($1::oid, NULL)", t.oid)
        for t in statement.get_parameters()
    ]
    await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    await conn.execute(f"PREPARE pp_generic_plan AS {query.sql}")
    # EXECUTE takes no bind parameters: the arguments as literals, rendered by the server.
    values = [
        f"{await conn.fetchval(f'SELECT quote_nullable(($1::{t})::text)', arg)}::{t}"
        for t, arg in zip(types, query.args, strict=True)
    ]
    # A prepared statement outlives the rollback: deallocated here.
    try:
        arguments = f"({', '.join(values)})" if values else ""
        tree = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE pp_generic_plan{arguments}")
    finally:
        await conn.execute("DEALLOCATE pp_generic_plan")
    return _root(tree)


def _root(tree: Any) -> dict[str, Any]:
    document = tree[0] if isinstance(tree, list) else tree
    root: dict[str, Any] = document["Plan"]
    return root


async def index_tables(conn: asyncpg.Connection) -> dict[str, str]:
    """Every index of the public schema and its table."""
    rows = await conn.fetch(
        "SELECT indexname, tablename FROM pg_indexes WHERE schemaname = 'public'"
    )
    return {r["indexname"]: r["tablename"] for r in rows}
