"""Model files: store them safely, load them safely, prove they answer sensibly.

The Training Service hands us joblib pickles of a bare `RandomForestClassifier`
or `XGBClassifier` (and XGBoost can also export native JSON/UBJ files). Loading
is synchronous and CPU-bound: callers run `load_model` in a worker thread.

A model that loads is not yet a model that works: a RandomForest pickled by
scikit-learn < 1.4 loads in newer versions without error but returns
"probabilities" of 75.3 and 36.2, because the trees' leaf values changed from
weighted class counts to fractions. `load_model` repairs that, and every
model must pass `probe` before anyone can activate it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import os
import re
import tempfile
import threading
import warnings
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, Literal, Protocol

import anyio
import numpy as np
import structlog
from sklearn.base import BaseEstimator, is_classifier
from sklearn.ensemble import RandomForestClassifier
from xgboost import XGBClassifier

from storage.errors import StorageError
from storage.model_files.booster import BoosterPredictor
from storage.model_files.forest import CompiledForest
from storage.model_files.safe_unpickle import (
    ForbiddenGlobalError,
    SizeLimitError,
    is_joblib_or_pickle,
    safe_load,
)
from storage.model_files.structure import ModelStructureError, check_booster_bytes, check_forest

__all__ = [
    "DEFAULT_MAX_BYTES",
    "KNOWN_SUFFIXES",
    "LoadedModel",
    "ModelFileError",
    "ModelKind",
    "file_sha256",
    "load_model",
    "probe",
    "store_model_file",
    "too_large",
]

log = structlog.get_logger(__name__)

ModelKind = Literal["xgboost", "random_forest"]

# Extensions a stored model file keeps; anything else is stored as `.pkl`,
# which is what the Training Service contract promises.
KNOWN_SUFFIXES: Final[frozenset[str]] = frozenset({".pkl", ".joblib", ".json", ".ubj"})

# MODEL_MAX_BYTES: a model file, and a pickle after decompression, may not be larger.
DEFAULT_MAX_BYTES: Final = 200_000_000

_PROBA_TOLERANCE: Final = 1e-5  # XGBoost computes in float32
_CHUNK: Final = 1 << 20


class ModelFileError(StorageError, ValueError):
    """A model file is refused: unsafe, corrupt, of an unknown format or not usable."""

    code = "file_refused"


class _HasPredictProba(Protocol):
    def predict_proba(self, X: np.ndarray) -> Any: ...


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model that loaded through the allow-list, was repaired if needed and passed the probe.

    Feed `predict_proba` a float matrix whose columns are in the model's order
    (`feature_names_in` when the model knows its names). The estimator's own
    `feature_names_in_` is moved here, so that scikit-learn does not warn on
    every batch that a NumPy array has no column names.
    """

    estimator: Any = field(repr=False)
    kind: ModelKind
    feature_names_in: list[str] | None
    n_features_in: int
    sha256: str
    path: Path
    file_format: Literal["joblib", "xgboost-json", "xgboost-ubj"]
    # Compatibility repairs applied at load (empty for a model of our versions).
    repairs: tuple[str, ...] = ()

    # A faster predictor that agreed with the estimator on the probe rows: a RandomForest
    # compiled for vectorised inference (storage.model_files.forest) or an XGBoost booster called
    # directly (storage.model_files.booster); None: the estimator predicts.
    compiled: Any = field(default=None, repr=False)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, 2); column 1 is the positive class."""
        matrix = self._checked(X)
        if self.compiled is not None and not np.isnan(matrix).any():
            return np.asarray(self.compiled.predict_proba(matrix), dtype=np.float64)
        return np.asarray(self.estimator.predict_proba(matrix), dtype=np.float64)

    def predict_positive(self, X: np.ndarray) -> np.ndarray:
        """`predict_proba(X)[:, 1]`, the same bits; the compiled predictors compute only
        this column (scoring reads nothing else)."""
        matrix = self._checked(X)
        if self.compiled is not None and not np.isnan(matrix).any():
            return np.asarray(self.compiled.predict_positive(matrix), dtype=np.float64)
        return np.asarray(self.estimator.predict_proba(matrix), dtype=np.float64)[:, 1]

    def _checked(self, X: np.ndarray) -> np.ndarray:
        matrix = np.asarray(X, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features_in:
            raise ValueError(
                f"model {self.path.name} expects a 2-D matrix with {self.n_features_in} "
                f"columns, got shape {matrix.shape}"
            )
        return matrix


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- storing


async def _chunks(data: bytes | AsyncIterable[bytes]) -> AsyncIterable[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
    else:
        async for chunk in data:
            yield chunk


def _flush_and_fsync(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (a crash could otherwise forget it).

    Best effort: some filesystems refuse fsync on a directory, and the file
    itself is complete by now, so that is no reason to fail the store.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


async def store_model_file(
    directory: str | os.PathLike[str],
    model_id: int,
    data: bytes | AsyncIterable[bytes],
    *,
    suffix: str = ".pkl",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[Path, str]:
    """Write a model file atomically as `model_<id>_<sha8><suffix>`; return (path, sha256).

    The bytes go to a temporary file in the same directory, are fsynced and
    then renamed, so a reader never sees a half-written model. On any failure,
    including cancellation, an empty body and a body longer than `max_bytes`
    (refused as soon as it passes the limit), the temporary file is removed and
    nothing is left behind. An unknown `suffix` is stored as `.pkl`.
    """
    target_dir = Path(directory)
    suffix = suffix.lower() if suffix.lower() in KNOWN_SUFFIXES else ".pkl"
    await anyio.to_thread.run_sync(lambda: target_dir.mkdir(parents=True, exist_ok=True))
    fd, tmp_name = tempfile.mkstemp(
        dir=target_dir, prefix=f".model_{int(model_id)}_", suffix=".part"
    )
    tmp_path = Path(tmp_name)
    tmp_file = os.fdopen(fd, "wb")
    digest = hashlib.sha256()
    size = 0
    try:
        try:
            async for chunk in _chunks(data):
                if chunk:
                    size += len(chunk)
                    if size > max_bytes:
                        raise ModelFileError(too_large(max_bytes))
                    digest.update(chunk)
                    await anyio.to_thread.run_sync(tmp_file.write, chunk)
            await anyio.to_thread.run_sync(_flush_and_fsync, tmp_file)
        finally:
            # Closed synchronously: after a cancellation, an await would not run.
            tmp_file.close()
        if size == 0:
            raise ModelFileError(f"model {model_id}: the model file is empty")
        sha256 = digest.hexdigest()
        final = target_dir / f"model_{int(model_id)}_{sha256[:8]}{suffix}"
        await anyio.to_thread.run_sync(os.replace, tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
    await anyio.to_thread.run_sync(_fsync_directory, target_dir)
    log.info("model file stored", model_id=model_id, path=str(final), sha256=sha256, bytes=size)
    return final, sha256


def too_large(max_bytes: int) -> str:
    """The refusal of a file over the size cap, naming the setting that sets it."""
    return (
        f"the model file is larger than {max_bytes} bytes (MODEL_MAX_BYTES); "
        "raise the setting if the model is genuinely this big"
    )


# --------------------------------------------------------------------------- loading

# Loading sets process-wide warning filters (catch_warnings is not thread-safe
# before Python 3.14); one load at a time keeps two loads from mixing theirs.
_load_lock = threading.Lock()
_logged_warnings: set[str] = set()
_XGB_LOG_PREFIX = re.compile(r"^\[\d\d:\d\d:\d\d\] WARNING: \S+: ")


def _detect_format(data: bytes) -> Literal["joblib", "xgboost-json", "xgboost-ubj"] | None:
    head = data[:64].lstrip()
    if head.startswith(b"{"):
        # XGBoost JSON starts with `{"`; UBJSON's `{` is followed by a type marker.
        return "xgboost-json" if head[1:].lstrip().startswith(b'"') else "xgboost-ubj"
    if is_joblib_or_pickle(data[:64]):
        return "joblib"
    return None


def _load_xgboost_native(data: bytes, path: Path) -> XGBClassifier:
    try:
        check_booster_bytes(data)
    except ModelStructureError as exc:
        raise ModelFileError(f"{path}: corrupt or unreadable XGBoost model file ({exc})") from exc
    model = XGBClassifier()
    try:
        model.load_model(bytearray(data))
    except TypeError as exc:  # the file holds a regressor or ranker
        raise ModelFileError(f"{path}: not a classifier ({exc})") from exc
    except Exception as exc:  # XGBoostError and friends: corrupt or truncated
        raise ModelFileError(f"{path}: corrupt or unreadable XGBoost model file ({exc})") from exc
    return model


def _log_load_warnings(caught: list[warnings.WarningMessage], path: Path) -> None:
    """Version-skew warnings are expected for old models: log each kind once, not per tree."""
    messages = {" ".join(_XGB_LOG_PREFIX.sub("", str(w.message)).split())[:300] for w in caught}
    for message in sorted(messages):
        if message in _logged_warnings:
            continue
        _logged_warnings.add(message)
        log.info("warning while loading a model file", path=str(path), warning=message)


def _iter_estimators(estimator: Any) -> Iterator[Any]:
    yield estimator
    yield from getattr(estimator, "estimators_", None) or ()


def _normalize_tree_values(forest: RandomForestClassifier) -> int:
    """Turn leaf values stored as weighted class counts into fractions; return trees changed.

    scikit-learn < 1.4 stored counts and divided by their sum in
    `predict_proba`; newer versions store the fractions and return them as
    they are. Dividing each node's row by its sum is exactly the division the
    old version did at predict time, and a no-op on rows that already sum to 1.
    """
    changed = 0
    for tree_estimator in getattr(forest, "estimators_", None) or ():
        tree = tree_estimator.tree_
        state = tree.__getstate__()
        values = np.asarray(state["values"], dtype=np.float64)
        sums = values.sum(axis=2, keepdims=True)
        needs = (np.abs(sums - 1.0) > 1e-9) & (sums > 0)
        if not needs.any():
            continue
        state["values"] = np.where(needs, values / np.where(sums > 0, sums, 1.0), values)
        tree.__setstate__(state)
        changed += 1
    return changed


def _fill_missing_params(estimator: Any) -> list[str]:
    """Give constructor parameters added after the model was pickled their defaults.

    Old pickles lack them (`monotonic_cst`, `feature_weights` ...), which
    breaks `get_params()` and `repr()` but not prediction; the defaults are
    the behaviour the old version had.
    """
    filled: list[str] = []
    for obj in _iter_estimators(estimator):
        for cls in type(obj).__mro__:
            init = cls.__dict__.get("__init__")
            if init is None or cls is object:
                continue
            try:
                signature = inspect.signature(init)
            except (TypeError, ValueError):  # compiled classes may have none
                continue
            for param in signature.parameters.values():
                if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or param.name == "self":
                    continue
                if param.default is param.empty or hasattr(obj, param.name):
                    continue
                setattr(obj, param.name, param.default)
                if param.name not in filled:
                    filled.append(param.name)
    return filled


def _check_estimator(obj: Any, path: Path) -> ModelKind:
    if isinstance(obj, XGBClassifier):
        kind: ModelKind = "xgboost"
    elif isinstance(obj, RandomForestClassifier):
        kind = "random_forest"
    elif not (isinstance(obj, BaseEstimator) and is_classifier(obj)):
        raise ModelFileError(f"{path}: not a classifier (holds a {type(obj).__name__})")
    else:
        raise ModelFileError(
            f"{path}: unsupported classifier {type(obj).__name__}; "
            "expected RandomForestClassifier or XGBClassifier"
        )
    if kind == "random_forest" and getattr(obj, "n_outputs_", 1) != 1:
        raise ModelFileError(f"{path}: multi-output models are not supported")
    classes = getattr(obj, "classes_", None)
    if classes is None:
        raise ModelFileError(f"{path}: the {type(obj).__name__} is not fitted (no classes_)")
    if len(classes) != 2:
        raise ModelFileError(
            f"{path}: the model has {len(classes)} classes ({list(classes)}), expected 2"
        )
    return kind


def _load_object(data: bytes, path: Path, file_format: str, max_bytes: int) -> Any:
    if file_format != "joblib":
        return _load_xgboost_native(data, path)
    try:
        return safe_load(data, max_bytes=max_bytes)
    except ModelStructureError as exc:
        raise ModelFileError(f"{path}: malformed model: {exc}") from exc
    except SizeLimitError as exc:
        raise ModelFileError(
            f"{path}: {exc} (MODEL_MAX_BYTES bounds the model after decompression too)"
        ) from exc
    except ForbiddenGlobalError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    except MemoryError as exc:
        raise ModelFileError(f"{path}: corrupt model file (absurd array size)") from exc
    except Exception as exc:  # truncated or corrupt: UnpicklingError, EOFError, ValueError ...
        raise ModelFileError(
            f"{path}: corrupt or truncated model file ({type(exc).__name__}: {exc})"
        ) from exc


def load_model(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedModel:
    """Load, check, repair and probe a model file. Blocking: run it in a worker thread.

    Raises `ModelFileError` (with the path and the reason) for a refused class,
    a corrupt or truncated file, a file (or decompressed pickle) larger than
    `max_bytes`, an unknown format, a model that is not a two-class
    RandomForest or XGBoost classifier, or one that fails the probe.
    """
    model_path = Path(path)
    try:
        if model_path.stat().st_size > max_bytes:
            raise ModelFileError(f"{model_path}: {too_large(max_bytes)}")
        data = model_path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{model_path}: cannot read the model file ({exc})") from exc
    # Hash the very bytes we load, so the recorded checksum is the loaded model's.
    sha256 = hashlib.sha256(data).hexdigest()
    file_format = _detect_format(data)
    if file_format is None:
        raise ModelFileError(
            f"{model_path}: unknown model file format (first bytes {data[:8]!r}); "
            "expected a joblib pickle or an XGBoost JSON/UBJ model"
        )
    with _load_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obj = _load_object(data, model_path, file_format, max_bytes)
    _log_load_warnings(caught, model_path)

    kind = _check_estimator(obj, model_path)
    if kind == "random_forest":
        try:
            check_forest(obj)
        except ModelStructureError as exc:
            raise ModelFileError(f"{model_path}: malformed model: {exc}") from exc
    repairs: list[str] = []
    if kind == "random_forest":
        trees = _normalize_tree_values(obj)
        if trees:
            repairs.append(f"normalized leaf values of {trees} trees from counts to fractions")
    filled = _fill_missing_params(obj)
    if filled:
        repairs.append(f"set missing parameters to their defaults: {', '.join(filled)}")
    _single_threaded(obj)

    names = getattr(obj, "feature_names_in_", None)
    feature_names = [str(n) for n in names] if names is not None else None
    if kind == "random_forest" and names is not None:
        del obj.feature_names_in_
    n_features_in = getattr(obj, "n_features_in_", None)
    if n_features_in is None:
        raise ModelFileError(f"{model_path}: the model does not record its number of features")
    n_features = int(n_features_in)
    if feature_names is not None and len(feature_names) != n_features:
        raise ModelFileError(
            f"{model_path}: the model names {len(feature_names)} features "
            f"but expects {n_features} inputs"
        )
    model = LoadedModel(
        estimator=obj,
        kind=kind,
        feature_names_in=feature_names,
        n_features_in=n_features,
        sha256=sha256,
        path=model_path,
        file_format=file_format,
        repairs=tuple(repairs),
    )
    probe(model, n_features)
    if kind == "random_forest":
        model = _with_fast_path(model, n_features, CompiledForest.from_estimator(obj))
    else:
        model = _with_fast_path(model, n_features, BoosterPredictor.from_estimator(obj))
    if repairs:
        log.info("model file repaired at load", path=str(model_path), repairs=repairs)
    return model


def _single_threaded(obj: Any) -> None:
    """Score on the calling thread only.

    The Training Service fits with `n_jobs=None`, which XGBoost reads as "every
    core": for the stream's batches of a few dozen rows its second OpenMP thread
    only spins. Measured with the golden model (30 trees, 20 rows): the same wall
    time at twice the CPU on an idle box, and with the other core busy (as it is
    with PostgreSQL under load) 2-4x the wall time and 3-5x the CPU of one
    thread. Probabilities do not depend on it (each row is summed on one thread).
    """
    obj.n_jobs = 1  # both wrappers read it when they predict
    if isinstance(obj, XGBClassifier):
        obj.get_booster().set_param({"nthread": 1})


def _with_fast_path(model: LoadedModel, n_features: int, fast: Any) -> LoadedModel:
    """The model with its faster predictor, if that gives the estimator's probabilities."""
    if fast is None:
        return model
    rows = _probe_rows(n_features)
    expected = np.asarray(model.estimator.predict_proba(rows), dtype=np.float64)
    proba = np.asarray(fast.predict_proba(rows), dtype=np.float64)
    positive = np.asarray(fast.predict_positive(rows), dtype=np.float64)
    if not np.allclose(proba, expected, rtol=0, atol=1e-12) or not np.array_equal(
        positive, proba[:, 1]
    ):
        log.warning(
            "fast predictor disagrees with the estimator; not used",
            path=str(model.path),
            predictor=type(fast).__name__,
        )
        return model
    return dataclasses.replace(model, compiled=fast)


# --------------------------------------------------------------------------- probing


def _probe_rows(n_features: int) -> np.ndarray:
    """Fixed rows spanning typical and extreme magnitudes; the same on every run."""
    rng = np.random.default_rng(20240601)
    fixed = np.array(
        [
            np.zeros(n_features),
            np.ones(n_features),
            -np.ones(n_features),
            np.linspace(-1.0, 1.0, n_features),
            np.full(n_features, 1e6),
            np.full(n_features, -1e6),
            np.full(n_features, 1e-9),
        ]
    )
    return np.vstack([fixed, rng.normal(size=(9, n_features)), rng.lognormal(size=(8, n_features))])


def probe(model: _HasPredictProba, n_features: int) -> None:
    """Refuse a model whose `predict_proba` is not a valid two-class distribution.

    Runs a few deterministic rows and requires shape (n, 2), finite values in
    [0, 1] and rows that sum to 1. Catches what loads without error but would
    produce nonsense, like an un-normalized old RandomForest.
    """
    rows = _probe_rows(n_features)
    name = getattr(getattr(model, "path", None), "name", None) or type(model).__name__
    try:
        proba = np.asarray(model.predict_proba(rows), dtype=np.float64)
    except Exception as exc:
        raise ModelFileError(
            f"model {name} failed the probe: predict_proba raised {type(exc).__name__}: {exc}"
        ) from exc
    if proba.shape != (len(rows), 2):
        raise ModelFileError(
            f"model {name} failed the probe: predict_proba returned shape {proba.shape}, "
            f"expected ({len(rows)}, 2)"
        )
    if not np.isfinite(proba).all():
        raise ModelFileError(f"model {name} failed the probe: non-finite probabilities")
    low, high = float(proba.min()), float(proba.max())
    if low < -_PROBA_TOLERANCE or high > 1.0 + _PROBA_TOLERANCE:
        raise ModelFileError(
            f"model {name} failed the probe: probabilities range from {low:g} to {high:g}, "
            "outside [0, 1]"
        )
    worst = float(np.abs(proba.sum(axis=1) - 1.0).max())
    if worst > _PROBA_TOLERANCE:
        raise ModelFileError(
            f"model {name} failed the probe: class probabilities do not sum to 1 "
            f"(off by up to {worst:g})"
        )
