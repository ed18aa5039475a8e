"""Versions of the libraries whose behaviour decides a prediction.

Models are unpickled by scikit-learn and XGBoost and features computed by
Polars: the exact versions matter for correctness (a pickle's repair, a
booster's output), so /health and /api/config report the ones running, and
the lock file (requirements.lock) pins them.
"""

from __future__ import annotations

from importlib import metadata

# Distribution name -> the name operators know it by.
LIBRARIES = {"scikit-learn": "scikit-learn", "xgboost-cpu": "xgboost", "polars": "polars"}


def library_versions() -> dict[str, str | None]:
    """{"scikit-learn": "1.9.1", "xgboost": "3.2.0", "polars": "2.1.0"} (None: not installed)."""
    versions: dict[str, str | None] = {}
    for distribution, name in LIBRARIES.items():
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            try:  # the full xgboost wheel instead of xgboost-cpu
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = None
    return versions
