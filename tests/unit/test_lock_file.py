"""The lock files agree with pyproject.toml, and the environment runs what they pin.

`requirements.lock` (the service) and `requirements-test.lock` (service + test
extra) are what scripts/run, scripts/test and the Containerfile install, with
hashes. A dependency added to or changed in pyproject.toml without re-locking
fails here, with the command to run (docs/dependencies.md).
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from storage.models.library_versions import library_versions

REPO = Path(__file__).resolve().parents[2]
RELOCK = "re-lock: see docs/dependencies.md (uv pip compile ...)"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def _pins(lock: str) -> dict[str, Version]:
    """Pinned versions that apply to this interpreter (universal locks fork by marker)."""
    pins: dict[str, Version] = {}
    for line in (REPO / lock).read_text().splitlines():
        match = PIN.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker and not Marker(marker).evaluate():
            continue
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    if extra:
        specs += project["optional-dependencies"][extra]
    return [Requirement(s) for s in specs]


@pytest.mark.parametrize(
    ("lock", "extra"), [("requirements.lock", None), ("requirements-test.lock", "test")]
)
def test_lock_pins_every_pyproject_dependency_within_its_bounds(
    lock: str, extra: str | None
) -> None:
    pins = _pins(lock)
    problems = []
    for requirement in _requirements(extra):
        if requirement.marker and not requirement.marker.evaluate():
            continue
        pinned = pins.get(canonicalize_name(requirement.name))
        if pinned is None:
            problems.append(f"{requirement.name} is not in {lock}")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            problems.append(f"{lock} pins {requirement.name}=={pinned}, outside {requirement}")
    assert problems == [], f"{'; '.join(problems)} — {RELOCK}"


def test_service_and_test_locks_pin_the_same_versions() -> None:
    service, test = _pins("requirements.lock"), _pins("requirements-test.lock")
    differ = {n: (v, test.get(n)) for n, v in service.items() if test.get(n) != v}
    assert differ == {}, f"the test lock must be compiled with -c requirements.lock — {RELOCK}"


def test_the_libraries_that_decide_predictions_run_at_the_locked_versions() -> None:
    pins = _pins("requirements.lock")
    running = library_versions()
    assert running["scikit-learn"] == str(pins["scikit-learn"])
    assert running["polars"] == str(pins["polars"])
    assert running["xgboost"] == str(pins[canonicalize_name("xgboost-cpu")])
    assert metadata.version("numpy") == str(pins["numpy"])
