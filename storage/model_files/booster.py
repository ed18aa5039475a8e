"""XGBoost probabilities straight from the booster, for the small batches of the stream.

`XGBClassifier.predict_proba` re-reads its parameters, looks the best iteration
up in the booster's attributes and enters a config context on every call: in
a round-robin over five benchmark models with 20 rows it took ~1.0 ms per call
against ~0.5 ms for the booster's `inplace_predict` with the same arguments.
Those arguments are read once here; `load_model` uses this only when it gives
the wrapper's probabilities on the probe rows.

`inplace_predict` itself then spends about as long in Python as in XGBoost's C
function for 20 rows: it encodes the same arguments as JSON each time, checks the
input's type through a dozen tests, and wraps the result by defining a class per
call (40 % of an XGBoost model's time in the service profile). For a dense float64
matrix, `predict_positive` calls that same C function (`XGBoosterPredictFromDense`,
the one `inplace_predict` calls for NumPy input) with the same arguments, encoded
once, and copies the result: XGBoost still computes every prediction. It is used
only when it gives `inplace_predict`'s exact bits on probe rows at load
(`from_estimator`), else `inplace_predict` is called, as before.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from xgboost import XGBClassifier
from xgboost import core as xgboost_core

# XGBoost's own handle on its C library and its error check (not public names: another
# version without them, or whose C call gives other bits, gets `inplace_predict`).
_LIB: Any = getattr(xgboost_core, "_LIB", None)
_check_call: Any = getattr(xgboost_core, "_check_call", None)


@dataclass(frozen=True, slots=True)
class BoosterPredictor:
    booster: Any
    iteration_range: tuple[int, int]  # as the wrapper picks it (the best iteration, if any)
    missing: float
    # `inplace_predict`'s arguments as it encodes them for the C function; None: call
    # `inplace_predict` (the direct call did not give its bits at load).
    direct_args: bytes | None = None

    @classmethod
    def from_estimator(cls, estimator: Any) -> BoosterPredictor | None:
        """None unless a fitted two-class `binary:logistic` tree model (what the wrapper
        predicts with `inplace_predict` and stacks as [1 - p, p])."""
        if not isinstance(estimator, XGBClassifier):
            return None
        if getattr(estimator, "n_classes_", None) != 2:
            return None
        if estimator.objective != "binary:logistic" or estimator.booster not in (
            None,
            "gbtree",
            "dart",
        ):
            return None
        try:
            iteration_range = (0, int(estimator.best_iteration) + 1)
        except AttributeError:  # trained without early stopping: every tree
            iteration_range = (0, 0)
        missing = np.nan if estimator.missing is None else float(estimator.missing)
        plain = cls(estimator.get_booster(), iteration_range, missing)
        direct = cls(
            plain.booster, iteration_range, missing, _direct_args(iteration_range, missing)
        )
        return direct if direct.agrees_with(plain) else plain

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Shape (n, 2): [1 - p, p], as `XGBClassifier.predict_proba` stacks them."""
        positive = self.predict_positive(X)
        return np.vstack((1.0 - positive, positive)).transpose()

    def predict_positive(self, X: np.ndarray) -> np.ndarray:
        """p (float32, as XGBoost computes it), column 1 of `predict_proba`, without
        stacking; a copy the caller owns."""
        if self.direct_args is not None:
            return self._direct(X)
        positive: np.ndarray = self.booster.inplace_predict(
            X, iteration_range=self.iteration_range, predict_type="value", missing=self.missing
        )
        return np.array(positive)

    def _direct(self, X: np.ndarray) -> np.ndarray:
        """`inplace_predict` of a dense matrix: the same C call, the same arguments."""
        data = np.ascontiguousarray(X, dtype=np.float64)
        rows, columns = data.shape
        interface = (
            f'{{"data": [{data.ctypes.data}, false], "strides": null, '
            f'"descr": [["", "<f8"]], "typestr": "<f8", "shape": [{rows}, {columns}], '
            f'"version": 3}}'
        ).encode()
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()
        preds = ctypes.POINTER(ctypes.c_float)()
        _check_call(
            _LIB.XGBoosterPredictFromDense(
                self.booster.handle,
                interface,
                self.direct_args,
                ctypes.c_void_p(),
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(preds),
            )
        )
        size = 1
        for i in range(dims.value):
            size *= int(shape[i])
        if size != rows:
            raise ValueError(f"XGBoost returned {size} values for {rows} rows")
        # XGBoost's buffer is reused by its next prediction on this thread: copy it now.
        out = np.empty(rows, dtype=np.float32)
        if rows:
            ctypes.memmove(out.ctypes.data, preds, rows * out.itemsize)
        return out

    def agrees_with(self, other: BoosterPredictor) -> bool:
        """Both give the same bits on probe rows (a few shapes, ties, missing values)."""
        rng = np.random.default_rng(0)
        features = int(self.booster.num_features())
        probes = [rng.normal(scale=s, size=(n, features)) for n, s in ((1, 1), (20, 1), (300, 4))]
        probes.append(np.round(probes[-1], 1))
        holes = probes[1].copy()
        holes[::3, ::2] = np.nan
        probes.append(holes)
        try:
            return all(
                np.array_equal(self.predict_positive(x), other.predict_positive(x), equal_nan=True)
                for x in probes
            )
        except Exception:  # any failure of the direct call: not used
            return False


def _direct_args(iteration_range: tuple[int, int], missing: float) -> bytes | None:
    """The config `inplace_predict` encodes for a probability prediction (None without
    access to the C library)."""
    if _LIB is None or _check_call is None:
        return None
    return json.dumps(
        {
            "type": 0,
            "training": False,
            "iteration_begin": int(iteration_range[0]),
            "iteration_end": int(iteration_range[1]),
            "missing": missing,
            "strict_shape": False,
            "cache_id": 0,
        }
    ).encode()
