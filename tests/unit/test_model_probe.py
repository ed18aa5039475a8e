"""The first load of a model file runs in a child process with limits.

What the structural checks cannot know about (an allowed constructor asked
for gigabytes, a load that never ends, a crash in native code) ends that
child, and the caller gets a refusal naming the limit, never a dead service.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import types
from pathlib import Path

import pytest
from hostile_models import tampered_forest
from model_factory import train_model

from storage.model_files.probe import exit_reason, probe_in_child
from storage.model_files.store import ModelFileError

FEATURES = ["a", "b", "c"]


def _probe(path: Path) -> None:
    probe_in_child(path, max_bytes=200_000_000, memory_bytes=500_000_000, timeout_seconds=60.0)


class _Allocation:
    """Pickles as `builtins.bytearray(4 GiB)`: every name on the allow-list, 4 GiB zeroed."""

    def __reduce__(self) -> tuple[type, tuple[int]]:
        return (bytearray, (4 << 30,))


def test_a_good_model_passes_and_a_malformed_one_is_refused_with_the_checks_reason(
    tmp_path: Path,
) -> None:
    good = train_model("random_forest", FEATURES, path=tmp_path / "good.pkl")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(tampered_forest(FEATURES, node=0, left_child=10**9))

    _probe(good)
    with pytest.raises(ModelFileError, match="left child 1000000000 is out of range"):
        _probe(bad)


def test_a_file_asking_for_more_memory_than_the_limit_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "alloc.pkl"
    path.write_bytes(pickle.dumps(_Allocation(), protocol=4))
    assert len(path.read_bytes()) < 100

    # The child's address space is capped: the allocation fails there, not here.
    with pytest.raises(ModelFileError, match=r"more than 500000000 bytes of memory"):
        _probe(path)


def test_a_load_that_never_ends_is_stopped_at_the_deadline(tmp_path: Path) -> None:
    # Opening a FIFO nobody writes to blocks for ever: the child hangs, the caller does not.
    fifo = tmp_path / "model.pkl"
    os.mkfifo(fifo)

    with pytest.raises(ModelFileError, match=r"longer than 2 s \(MODEL_PROBE_TIMEOUT_SECONDS\)"):
        probe_in_child(fifo, max_bytes=1000, memory_bytes=500_000_000, timeout_seconds=2.0)


def test_a_child_that_died_without_a_verdict_is_reported_by_its_signal() -> None:
    assert exit_reason(-signal.SIGSEGV) == "crashed (SIGSEGV)"
    assert exit_reason(-signal.SIGKILL) == "crashed (SIGKILL)"
    assert "MODEL_PROBE_TIMEOUT_SECONDS" in exit_reason(-signal.SIGXCPU)
    assert "MODEL_PROBE_TIMEOUT_SECONDS" in exit_reason(-signal.SIGALRM)
    assert exit_reason(3) == "exited with status 3"


def test_the_probe_child_does_not_run_the_parents_main_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Streamlit's test harness leaves its script as __main__; spawn-style children
    # re-run __main__ first, and a script that fails there failed every probe.
    script = tmp_path / "failing_main.py"
    script.write_text("raise SystemExit('the parent main module ran in the probe child')\n")
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    main.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", main)
    good = train_model("random_forest", FEATURES, path=tmp_path / "good.pkl")

    _probe(good)
