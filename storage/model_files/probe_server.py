"""Imported only by the model probe's forkserver (as its preload), never by the service.

multiprocessing prepares every forkserver child like a spawned one: it first
re-imports the parent's `__main__` (by module name, or by running its file).
A probe child runs one function of storage.model_files.probe and needs nothing of
it, while re-running whatever started the service is slow at best and fails
at worst: under the test runner, Streamlit's test harness leaves its
dashboard script as `__main__`, and every probe child ran that script and
died. Patched here, in the forkserver process only (and so in the children it
forks), the preparation skips that step; the parent is untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from multiprocessing import spawn
from typing import Any

import storage.model_files.probe  # noqa: F401  (scikit-learn and XGBoost, imported once here)

_prepare = spawn.prepare


def _prepare_without_main(data: Mapping[str, Any]) -> None:
    _prepare({key: value for key, value in data.items() if not key.startswith("init_main_from")})


spawn.prepare = _prepare_without_main
