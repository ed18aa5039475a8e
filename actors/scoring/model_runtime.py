"""An active model ready to run: the loaded estimator, its feature needs, its settings.

`score` is the one path from a batch to probabilities, used by the predictor
actors, by manual predictions (`POST /api/predict`) and by the benchmark, so
that all three feed a model exactly the same features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from actors.runtime.messages import Tick, phase_key
from actors.webhooks.payload import TAG_ALERT, TAG_NEGATIVE, TAG_POSITIVE, WebhookModel
from features.matrix import FeatureSpec, TickRows
from storage.model_files.store import LoadedModel, ModelFileError, load_model
from storage.predictions.writes import ModelTarget, NewPrediction

ZERO = timedelta(0)
_TAG_OF_CODE = (TAG_NEGATIVE, TAG_POSITIVE, TAG_ALERT)
INVALID_PROBABILITY = "invalid probability"


@dataclass(frozen=True, slots=True)
class ModelRuntime:
    row: Mapping[str, Any]  # the active_models row it was built from
    model: LoadedModel
    spec: FeatureSpec
    webhook: WebhookModel

    @property
    def active_model_id(self) -> int:
        return int(self.row["id"])

    @property
    def name(self) -> str:
        return str(self.row["custom_name"] or self.row["name"])

    @property
    def phases(self) -> tuple[int, ...] | None:
        return self.webhook.phases

    @property
    def phase_key(self) -> str:
        return phase_key(self.phases)

    @property
    def file_version(self) -> tuple[str, str]:
        return (str(self.row["file_path"]), str(self.row["file_sha256"]))

    def with_row(self, row: Mapping[str, Any]) -> ModelRuntime:
        """Same model file, new settings (threshold, webhooks, filters...)."""
        return build_runtime(row, self.model)

    @property
    def target(self) -> ModelTarget:
        """The model's columns of its prediction rows (looked up once per batch, not per row)."""
        r = self.row
        kind, minutes = r["target_kind"], r["future_minutes"]
        # The outcome is known at T + future_minutes (time-based), at T itself (classic).
        delay = timedelta(minutes=int(minutes)) if kind == "time_based" and minutes else ZERO
        return ModelTarget(
            self.active_model_id,
            int(r["model_id"]),
            float(r["alert_threshold"]),
            kind,
            r["target_variable"],
            r["target_operator"],
            r["target_value"],
            minutes,
            r["price_change_percent"],
            r["target_direction"],
            delay,
        )

    def new_predictions(
        self,
        ticks: Sequence[Tick],
        probabilities: Sequence[float],
        tags: Sequence[str],
        snapshots: Sequence[tuple[float | None, float | None]],
        source: str = "stream",
    ) -> list[NewPrediction]:
        """The rows to store, one per tick (manual predictions; a stream batch goes to
        `storage.predictions.writes.insert_batch`)."""
        t = self.target
        return [
            NewPrediction(
                t.active_model_id,
                t.model_id,
                tick.coin_id,
                tick.data_timestamp,
                tick.phase_id,
                prediction_of(p),
                p,
                t.alert_threshold,
                tag,
                close,
                cap,
                t.target_kind,
                t.target_variable,
                t.target_operator,
                t.target_value,
                t.future_minutes,
                t.price_change_percent,
                t.target_direction,
                source,
                tick.data_timestamp + t.evaluation_delay,
            )
            for tick, p, tag, (close, cap) in zip(
                ticks, probabilities, tags, snapshots, strict=True
            )
        ]


def prediction_of(probability: float) -> int:
    """The predicted class: 1 when p >= 0.5."""
    return 1 if probability >= 0.5 else 0


def build_runtime(row: Mapping[str, Any], model: LoadedModel) -> ModelRuntime:
    features = list(row["features"])
    if model.feature_names_in is not None and list(model.feature_names_in) != features:
        raise ModelFileError(
            f"model file {model.path.name} expects features {model.feature_names_in}, "
            f"the database lists {features}"
        )
    if model.n_features_in != len(features):
        raise ModelFileError(
            f"model file {model.path.name} expects {model.n_features_in} features, "
            f"the database lists {len(features)}"
        )
    spec = FeatureSpec.from_model(features, row["params"])
    return ModelRuntime(row=dict(row), model=model, spec=spec, webhook=WebhookModel.from_row(row))


def load_runtime(row: Mapping[str, Any]) -> ModelRuntime:
    """Load the model file of an active_models row. Blocking: run it in a worker thread.

    The file must hash to what was recorded at import: a file replaced behind our
    back is refused, never run.
    """
    model = load_model(row["file_path"])
    if model.sha256 != row["file_sha256"]:
        raise ModelFileError(
            f"model file {row['file_path']} has sha256 {model.sha256}, "
            f"expected {row['file_sha256']} recorded at import"
        )
    return build_runtime(row, model)


@dataclass(frozen=True, slots=True)
class Scored:
    ticks: list[Tick]
    probabilities: np.ndarray
    snapshots: list[tuple[float | None, float | None]]  # (price_close, market_cap) at T
    skipped: list[tuple[Tick, str]]

    def tagged(self, alert_threshold: float) -> tuple[list[float], list[str]]:
        """The probabilities as Python floats and their tags (CONTRACTS.md section 3)."""
        probabilities: list[float] = self.probabilities.tolist()
        # `tag_for` for the whole array: alert first, then positive from 0.5 (NaN: negative).
        p = self.probabilities
        codes = np.where(p >= alert_threshold, 2, (p >= 0.5).astype(np.int64)).tolist()
        return probabilities, [_TAG_OF_CODE[c] for c in codes]

    def predictions(self) -> list[int]:
        """`prediction_of` each probability (1 when p >= 0.5)."""
        predicted: list[int] = (self.probabilities >= 0.5).astype(np.int64).tolist()
        return predicted


def score(
    runtime: ModelRuntime,
    ticks: Sequence[Tick],
    rows: TickRows,
    positions: np.ndarray | None = None,
) -> Scored:
    """The model's probabilities for the ticks, from the computed feature rows. Blocking.

    `rows` holds the features of the batch's coins as of each tick (see
    `actors.scoring.shared_features`); the row at each tick's exact timestamp is used.
    `positions`: `rows.positions` of the ticks, when models share them (a backtest).
    Models of a batch that pass the same `ticks` object share the rows' lookup, their
    checks and their snapshot columns (`TickRows.found`).
    """
    if not ticks:
        return Scored([], np.empty(0), [], [])
    if positions is None:
        shared = rows.found(ticks, lambda: rows.positions(_keys(ticks)))
    else:
        found = positions
        shared = rows.found(ticks, lambda: found)
    matrix = rows.matrix((), runtime.spec, shared=shared)
    skipped = [(ticks[i], reason) for i, reason in matrix.skipped]
    if not matrix.rows:
        return Scored([], np.empty(0), [], skipped)
    probabilities = runtime.model.predict_positive(matrix.values)
    kept, positions = [ticks[i] for i in matrix.rows], matrix.positions
    # NaN fails both comparisons, an infinity one of them.
    valid = (probabilities >= 0.0) & (probabilities <= 1.0)
    if not valid.all():
        # Never stored (the table refuses it) nor sent: one bad row must not sink the batch.
        skipped += [(t, INVALID_PROBABILITY) for t, ok in zip(kept, valid, strict=True) if not ok]
        kept = [t for t, ok in zip(kept, valid, strict=True) if ok]
        positions = positions[valid]
        probabilities = probabilities[valid]
    return Scored(kept, probabilities, rows.snapshots(positions), skipped)


def _keys(ticks: Sequence[Tick]) -> list[tuple[str, datetime]]:
    return [(t.coin_id, t.data_timestamp) for t in ticks]
