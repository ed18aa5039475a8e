"""Windows held per coin come back exactly as stored, through replacements and compaction."""

from __future__ import annotations

import polars as pl

from actors.scoring.window_store import WindowStore


def _windows(rows: list[tuple[str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"mint": [m for m, _ in rows], "timestamp": [t for _, t in rows]},
        schema={"mint": pl.String(), "timestamp": pl.Int64()},
    )


def _held(store: WindowStore, mint: str) -> list[int]:
    frame = store.rows_of([mint])
    return [] if frame is None else frame["timestamp"].to_list()


def test_replaced_windows_compact_and_keep_the_order_of_storing() -> None:
    store = WindowStore(compact_after=1)
    store.put(_windows([("A", 1), ("A", 2), ("B", 1), ("C", 1), ("C", 2)]))
    # Rows of one coin apart from each other are held as one window all the same.
    groups = store.put(_windows([("B", 5), ("D", 1), ("B", 6)]))
    assert groups.select("mint", "rows", "first", "last").rows() == [("B", 2, 5, 6), ("D", 1, 1, 1)]
    store.put(_windows([("A", 3), ("A", 4), ("A", 5)]))
    store.forget(["C"])
    store.put(_windows([("B", 7)]))  # 7 replaced rows now outnumber the 5 live ones
    assert store._frame is not None and store._frame.height == 5  # compacted
    assert {m: _held(store, m) for m in store.mints()} == {"D": [1], "A": [3, 4, 5], "B": [7]}
    assert store.mints() == ["D", "A", "B"]  # least recently stored first
    assert "C" not in store and len(store) == 3
    both = store.rows_of(["A", "B", "gone"])
    assert both is not None and both.rows() == [("A", 3), ("A", 4), ("A", 5), ("B", 7)]
    assert store.rows_of(["gone"]) is None
