"""Load the tools under `scripts/` (demo data, replay) that live beside the packages."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType


def load_script(name: str) -> ModuleType:
    """`scripts/<name>.py`: not part of the installed packages, found from the repository."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.append(root)
    return importlib.import_module(f"scripts.{name}")
