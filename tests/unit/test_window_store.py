"""Windows held per coin come back exactly as stored, through replacements and compaction."""

from __future__ import annotations

import numpy as np
import polars as pl

from actors.scoring import window_store
from actors.scoring.window_store import WindowStore


def _windows(rows: list[tuple[str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"mint": [m for m, _ in rows], "timestamp": [t for _, t in rows]},
        schema={"mint": pl.String(), "timestamp": pl.Int64()},
    )


def _put(store: WindowStore, rows: list[tuple[str, int]]) -> None:
    coins = list(dict.fromkeys(m for m, _ in rows))
    windows = _windows(sorted(rows, key=lambda r: coins.index(r[0])))
    counts = [(m, sum(1 for r in rows if r[0] == m)) for m in coins]
    store.put(windows, counts, windows["timestamp"].to_numpy() * 10)


def _held(store: WindowStore, mint: str) -> list[int]:
    held = store.window(mint)
    if held is None:
        return []
    frame, _ = store.frame_with(_windows([]))
    times = frame["timestamp"].slice(held.offset, held.rows).to_list()
    assert held.keys.tolist() == [t * 10 for t in times]  # the keys stay with their rows
    return times


def test_replaced_windows_compact_and_keep_the_order_of_storing() -> None:
    store = WindowStore(compact_after=1)
    _put(store, [("A", 1), ("A", 2), ("B", 1), ("C", 1), ("C", 2)])
    _put(store, [("B", 5), ("B", 6), ("D", 1)])
    assert _held(store, "B") == [5, 6]
    _put(store, [("A", 3), ("A", 4), ("A", 5)])
    store.forget(["C"])
    _put(store, [("B", 7)])  # 7 replaced rows now outnumber the 5 live ones
    assert store._frame is not None and store._frame.height == 5  # compacted
    assert {m: _held(store, m) for m in store.mints()} == {"D": [1], "A": [3, 4, 5], "B": [7]}
    assert store.mints() == ["D", "A", "B"]  # least recently stored first
    assert "C" not in store and len(store) == 3
    assert store.window("gone") is None


def test_many_appended_windows_are_copied_into_one_chunk_and_stay_the_same() -> None:
    store = WindowStore(compact_after=10_000)
    for step in range(3 * window_store.MAX_CHUNKS):
        _put(store, [(f"coin{step % 5}", step), (f"coin{step % 5}", step + 1)])
        assert store._frame is not None and store._frame.n_chunks() <= window_store.MAX_CHUNKS
    last = 3 * window_store.MAX_CHUNKS - 1
    assert {m: _held(store, m) for m in store.mints()} == {
        f"coin{s % 5}": [s, s + 1] for s in range(last - 4, last + 1)
    }
    assert np.array_equal(store.window(f"coin{last % 5}").keys, [10 * last, 10 * last + 10])  # type: ignore[union-attr]
