"""docs/metrics.md and docs/grafana-dashboard.json stay true to `actors/runtime/metrics.py`.

Operators build alerts from the catalogue and dashboards from the JSON; a metric
renamed in code and not in the docs silently empties a panel or an alert.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aioprometheus.collectors import Counter, Gauge, Histogram

from actors.runtime import metrics

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
CODE_DIRS = ("actors", "storage", "web", "features")
RECORDING_METHODS = frozenset({"inc", "dec", "add", "set", "observe"})
# Defined but recorded by no code yet; the catalogue says so. Remove a name when it is wired.
NOT_YET_RECORDED: frozenset[str] = frozenset()
ROW = re.compile(r"^\|\s*`(pp_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|\s*([^|]*)\|(.*)$", re.MULTILINE)
METRIC_NAME = re.compile(r"\bpp_[a-z0-9_]+\b")


def _kind(collector: Any) -> str:
    for cls, name in ((Histogram, "histogram"), (Counter, "counter"), (Gauge, "gauge")):
        if isinstance(collector, cls):
            return name
    raise AssertionError(f"unexpected collector {collector!r}")


def registry() -> dict[str, str]:
    """name -> counter | gauge | histogram, for every metric the service exports."""
    return {name: _kind(c) for name, c in metrics.REGISTRY.collectors.items()}


def catalogue_rows() -> dict[str, tuple[str, str, str]]:
    """name -> (type, labels column, rest of the row) of every table row in docs/metrics.md."""
    rows: dict[str, tuple[str, str, str]] = {}
    for name, kind, labels, rest in ROW.findall(CATALOGUE.read_text()):
        assert name not in rows, f"{name} is listed twice"
        rows[name] = (kind, labels, rest)
    return rows


def _constant_to_name() -> dict[str, str]:
    """`ACTIVE_MODELS` -> `pp_active_models`, from the module's own objects."""
    return {
        attr: value.name
        for attr, value in vars(metrics).items()
        if isinstance(value, Counter | Gauge | Histogram)
    }


def _dict_keys(node: ast.AST | None) -> set[str] | None:
    if isinstance(node, ast.Dict):
        return {
            k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
        }
    return None


def recorded_labels() -> dict[str, set[str]]:
    """Metric name -> label names used by every `.inc/.add/.set/.observe` call in the code."""
    constants = _constant_to_name()
    found: dict[str, set[str]] = {}
    for directory in CODE_DIRS:
        for path in (ROOT / directory).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for scope in ast.walk(tree):
                if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                # `labels = {...}` then `.set(labels, ...)` (the evaluator does this).
                local_dicts = {
                    target.id: _dict_keys(node.value)
                    for node in ast.walk(scope)
                    if isinstance(node, ast.Assign)
                    for target in node.targets
                    if isinstance(target, ast.Name)
                }
                for call in ast.walk(scope):
                    name = _recorded_metric(call, constants)
                    if name is None or not isinstance(call, ast.Call) or not call.args:
                        continue
                    first = call.args[0]
                    keys = _dict_keys(first)
                    if keys is None and isinstance(first, ast.Name):
                        keys = local_dicts.get(first.id)
                    assert keys is not None, f"{path}:{call.lineno}: labels of {name} not literal"
                    found.setdefault(name, set()).update(keys)
    return found


def _recorded_metric(node: ast.AST, constants: dict[str, str]) -> str | None:
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return None
    if node.func.attr not in RECORDING_METHODS:
        return None
    target = node.func.value
    if (
        isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "metrics"
    ):
        return constants.get(target.attr)
    return None


def test_every_metric_is_in_the_catalogue_with_its_type() -> None:
    exported, rows = registry(), catalogue_rows()
    assert len(exported) >= 30
    assert set(exported) - set(rows) == set(), "metrics missing from docs/metrics.md"
    assert set(rows) - set(exported) == set(), "docs/metrics.md lists metrics that do not exist"
    for name, kind in exported.items():
        assert rows[name][0] == kind, f"{name} is a {kind}, the catalogue says {rows[name][0]}"


def test_catalogue_names_every_label_the_code_records() -> None:
    rows = catalogue_rows()
    for name, labels in recorded_labels().items():
        column = rows[name][1]
        documented = set(re.findall(r"`([a-z_]+)`", column))
        assert labels <= documented, f"{name}: labels {sorted(labels)}, documented {column!r}"
        if not labels:
            assert column.strip() == "—", f"{name} has no labels; the catalogue says {column!r}"


def test_every_metric_is_recorded_by_some_code() -> None:
    """A metric nobody records exports nothing: the failure the service being replaced had."""
    never = set(registry()) - set(recorded_labels())
    assert never == NOT_YET_RECORDED, (
        f"never recorded: {sorted(never)}; update NOT_YET_RECORDED and docs/metrics.md"
    )
    for name in NOT_YET_RECORDED:
        assert "not recorded yet" in catalogue_rows()[name][2]


# ---- Grafana dashboard -------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def _series_names() -> set[str]:
    """What Prometheus stores: histograms only as their _bucket/_sum/_count series."""
    names: set[str] = set()
    for name, kind in registry().items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


def test_dashboard_queries_use_only_metrics_that_exist() -> None:
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    series = _series_names()
    used: set[str] = set()
    queries = 0
    for panel in _panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            names = set(METRIC_NAME.findall(target["expr"]))
            assert names, f"{panel['title']}: {target['expr']} uses no pp_ metric"
            assert names <= series, f"{panel['title']}: unknown {sorted(names - series)}"
            used |= names
            queries += 1
    for variable in variables.values():
        definition = variable.get("definition", "")
        assert set(METRIC_NAME.findall(definition)) <= series, variable["name"]
    assert queries >= 20
    # The panels an operator needs first.
    wanted = {
        "pp_intake_lag_seconds_bucket",
        "pp_intake_rows_total",
        "pp_batches_total",
        "pp_batch_size_coins_bucket",
        "pp_predictions_total",
        "pp_prediction_lag_seconds_bucket",
        "pp_webhook_sent_total",
        "pp_webhook_failed_total",
        "pp_webhook_dead_total",
        "pp_webhook_outbox_depth",
        "pp_evaluation_lag_seconds",
        "pp_model_live_success_rate",
        "pp_listener_up",
        "pp_actor_restarts_total",
    }
    assert wanted - used == set()


def test_dashboard_percentiles_are_histogram_quantiles_over_buckets_by_le() -> None:
    for panel in _panels(_dashboard()["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            if "histogram_quantile" not in expr:
                continue
            assert "_bucket" in expr and re.search(r"by \(le\b", expr), expr
