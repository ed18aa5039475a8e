"""Property-based run of every documented operation against the real service.

Schemathesis generates requests from `/api/openapi.json` (valid ones, and
invalid ones that a script with a bug would send) and sends them to the
running service on the test database. Every answer must be one the document
promises: no 5xx, a documented status code and content type, and every error
in the one shape `{"error": {"code", "message", "details"}}`.

The Training Service URL points at a closed port, so the routes that call it
answer their documented 502 quickly instead of waiting for a timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from ports import closed_port
from prediction_rows import add_metric, add_model, add_prediction, set_outcome
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from service_runner import running_service

from storage.config import Settings
from storage.db.pool import connect
from web.openapi import openapi_document

COIN = "FuzzMint1111111111111111111111111111111pump"
EXAMPLES_PER_OPERATION = 20
# Their 503 is a health report with reasons, not an error.
HEALTH_PATHS = frozenset({"/health", "/api/health"})
# Bounds the run on a slow machine: past it, each operation still gets its first request
# (so every route is reached) but no more examples. Not a speed assertion.
TIME_BUDGET_SECONDS = 90.0

# No 500 ever; another 5xx only where documented (502: the Training Service is down,
# 503: health degraded or the prediction actors are not running), which
# status_code_conformance holds us to.
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass(slots=True)
class Findings:
    """What went wrong, one line per distinct problem (operation + check + status)."""

    problems: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    statuses: dict[str, set[int]] = field(default_factory=dict)

    def add(self, key: str, text: str) -> None:
        self.problems.setdefault(key, text)


async def _seed(dsn: str) -> tuple[int, int]:
    """One model with a judged prediction and price rows, so real rows get exercised."""
    conn = await connect(dsn)
    try:
        model = await add_model(conn, 501, is_active=False)
        spare = await add_model(conn, 502, is_active=False)
        # Older than the catch-up window: the intake skips these rows, so /health stays green.
        t0 = datetime.now(UTC) - timedelta(seconds=2 * 3600)
        for minute in range(0, 10):
            await add_metric(conn, COIN, t0 + timedelta(minutes=minute), 1.0 + minute / 100)
        prediction = await add_prediction(conn, model, COIN, t0, prediction=1)
        await set_outcome(conn, prediction, "success", change=12.5)
        await add_prediction(conn, model, COIN, t0 + timedelta(minutes=1), prediction=0)
    finally:
        await conn.close()
    return model, spare


def _error_shape_problem(response: schemathesis.Response) -> str | None:
    """None when an error response is `{"error": {"code", "message", "details"}}`."""
    if response.status_code < 400:
        return None
    try:
        body: Any = response.json()
    except ValueError:
        return f"error body is not JSON: {response.text[:200]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"code", "message", "details"}:
        return f"error body has the wrong shape: {body!r}"[:300]
    if not (
        isinstance(error["code"], str)
        and isinstance(error["message"], str)
        and error["message"]
        and isinstance(error["details"], dict)
    ):
        return f"error fields have the wrong types: {error!r}"[:300]
    return None


def _runs(
    schema: Any, model: int, spare: int
) -> Iterator[tuple[Any, GenerationMode, dict[str, Any] | None]]:
    """(operation, mode, fixed path parameters) in an order where deletes come last.

    Operations with an `{id}` run twice: once with generated ids (mostly unknown:
    404 paths) and once on the seeded model, so bodies reach real validation and
    real rows. DELETE /api/models/{id} uses the spare model so the others keep theirs.
    """
    document = openapi_document()["paths"]
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: (op.method.upper() == "DELETE", op.path))
    for op in operations:
        yield op, GenerationMode.POSITIVE, None
        spec = document[op.path][op.method.lower()]
        if spec.get("parameters") or spec.get("requestBody"):
            # Nothing to get wrong in a request without parameters or body.
            yield op, GenerationMode.NEGATIVE, None
        fixed: dict[str, Any] = {}
        if "{id}" in op.path:
            deletes_model = op.method.upper() == "DELETE" and op.path == "/api/models/{id}"
            fixed["id"] = spare if deletes_model else model
        if "{coin_id}" in op.path:
            fixed["coin_id"] = COIN
        if fixed:
            yield op, GenerationMode.POSITIVE, fixed


def fuzz_document() -> dict[str, Any]:
    """The served document without its bearer requirement.

    The run has no API_TOKEN configured, so a request without the header is rightly
    accepted; tests/integration/test_api_security.py covers the token.
    """
    document = openapi_document()
    for operations in document["paths"].values():
        for operation in operations.values():
            operation.pop("security", None)
    return document


def _fuzz(base_url: str, model: int, spare: int, deadline: float) -> Findings:
    schema = schemathesis.openapi.from_dict(fuzz_document())
    findings = Findings()
    session = requests.Session()

    def run(op: Any, mode: GenerationMode, fixed: dict[str, Any] | None) -> None:
        strategy = op.as_strategy(generation_mode=mode, path_parameters=fixed)

        @hypothesis.settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def one(case: Case[Any]) -> None:
            label = f"{op.method.upper()} {op.path} [{mode.value}]"
            if time.monotonic() > deadline and label in findings.statuses:
                return
            response = case.call(base_url=base_url, session=session, timeout=10)
            findings.requests += 1
            findings.statuses.setdefault(label, set()).add(response.status_code)
            checks: list[Callable[..., Any]] = list(CHECKS)
            if mode is GenerationMode.NEGATIVE:
                checks.append(negative_data_rejection)
            try:
                case.validate_response(response, checks=checks)
            except (Failure, FailureGroup) as exc:
                failures = exc.exceptions if isinstance(exc, FailureGroup) else [exc]
                for failure in failures:
                    key = f"{label}: {failure.title} {response.status_code}"
                    text = f"{key}\n  {case.as_curl_command()}\n  {failure.message}"
                    findings.add(key, text[:1500])
            if response.status_code == 500:
                key = f"{label}: server error 500"
                findings.add(key, f"{key}\n  {case.as_curl_command()}\n  {response.text[:300]}")
            health_report = op.path in HEALTH_PATHS
            problem = None if health_report else _error_shape_problem(response)
            if problem is not None:
                key = f"{label}: error shape {response.status_code}"
                findings.add(key, f"{key}\n  {case.as_curl_command()}\n  {problem}")

        one()

    for op, mode, fixed in _runs(schema, model, spare):
        run(op, mode, fixed)
    session.close()
    return findings


@pytest.mark.timeout(180)
async def test_generated_requests_get_documented_answers_and_never_a_server_error(
    settings: Settings,
) -> None:
    settings = settings.replace(
        training_service_api_url=f"http://127.0.0.1:{closed_port()}/api",
        training_service_timeout_seconds=2.0,
    )
    model, spare = await _seed(settings.db_dsn)
    started = time.monotonic()
    async with running_service(settings) as service:
        base_url = f"http://127.0.0.1:{service.web_port}"
        findings = await anyio.to_thread.run_sync(
            _fuzz, base_url, model, spare, started + TIME_BUDGET_SECONDS
        )
    elapsed = time.monotonic() - started
    print(f"fuzz: {findings.requests} requests in {elapsed:.1f}s")
    assert not findings.problems, "\n\n".join(findings.problems.values())
    # The run really reached the operations: each answered at least once.
    documented = {f"{m.upper()} {p}" for p, ms in openapi_document()["paths"].items() for m in ms}
    reached = {label.rsplit(" [", 1)[0] for label in findings.statuses}
    assert reached == documented
