"""Every stable code the API can receive from storage or actors has its HTTP status.

Errors below the web layer carry a code and no status; web/errors.py's `status_of`
decides the status. A new code raised without an entry there would answer 500, so
this reads the codes the source raises (literal first arguments of the errors the
API turns into responses) and checks each has a status.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from web.errors import status_of

ROOT = Path(__file__).resolve().parents[2]
# Errors whose code the API answers with (web/routes/models.py, web/routes/predict.py).
RAISED_BY = {
    "ModelImportError": ROOT / "storage" / "models" / "model_import.py",
    "ManualPredictError": ROOT / "actors" / "scoring" / "manual_predict.py",
}


def _codes(error: str, path: Path) -> set[str]:
    codes = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == error:
            first = node.args[0] if node.args else None
            assert isinstance(first, ast.Constant), f"{path.name}:{node.lineno}: code not literal"
            codes.add(first.value)
    return codes


@pytest.mark.parametrize("error", sorted(RAISED_BY))
def test_every_code_the_api_can_receive_has_a_status(error: str) -> None:
    codes = _codes(error, RAISED_BY[error])
    assert codes, f"no {error} found: the test reads the wrong file"
    assert {c: status_of(c) for c in codes if status_of(c) == 500} == {}
