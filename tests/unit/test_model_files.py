"""Model files: safe loading, old-version repairs, the probe, atomic storage."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import warnings
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import joblib
import numpy as np
import pandas as pd
import pytest
from model_factory import fit_estimator, train_model
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from xgboost import XGBRegressor

from storage.model_files.store import (
    ModelFileError,
    file_sha256,
    load_model,
    probe,
    store_model_file,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODELS = FIXTURES / "models"
EXPECTED = json.loads((MODELS / "expected_probabilities.json").read_text())
FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "num_buys", "price_roc_5"]


@pytest.fixture(scope="module")
def golden_rows() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "features" / "expected_features.csv").head(50)


# --------------------------------------------------------------------------- golden models


@pytest.mark.parametrize("kind", ["random_forest", "xgboost"])
def test_golden_pickles_reproduce_the_training_service_probabilities(
    kind: str, golden_rows: pd.DataFrame
) -> None:
    spec = EXPECTED[kind]
    model = load_model(MODELS / spec["file"])

    assert model.kind == kind
    assert model.n_features_in == len(spec["features"])
    if model.feature_names_in is not None:
        assert model.feature_names_in == spec["features"]
    proba = model.predict_proba(golden_rows[spec["features"]].to_numpy(dtype=np.float64))
    diff = np.abs(proba[:, 1] - np.array(spec["proba_first_50"]))
    assert diff.max() <= 1e-6, f"{kind}: max abs diff {diff.max():g}"
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_models_fitted_for_every_core_score_on_one_thread(tmp_path: Path) -> None:
    """The Training Service fits with n_jobs=None (XGBoost: every core); for the
    stream's small batches a second thread only burns the core PostgreSQL needs."""
    golden = load_model(MODELS / EXPECTED["xgboost"]["file"])
    config = json.loads(golden.estimator.get_booster().save_config())
    assert config["learner"]["generic_param"]["nthread"] == "1"
    assert golden.estimator.n_jobs == 1

    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=8, n_jobs=-1, random_state=0).fit(X, y)
    joblib.dump(forest, tmp_path / "rf.pkl")
    loaded = load_model(tmp_path / "rf.pkl")
    assert loaded.estimator.n_jobs == 1
    assert np.array_equal(loaded.estimator.predict_proba(X), forest.predict_proba(X))


def test_random_forest_from_sklearn_1_3_is_repaired_and_usable(golden_rows: pd.DataFrame) -> None:
    model = load_model(MODELS / EXPECTED["random_forest"]["file"])

    assert any("counts to fractions" in r for r in model.repairs)
    # Parameters added after 1.3 (monotonic_cst) no longer break get_params/repr.
    assert "monotonic_cst" in model.estimator.get_params()
    repr(model.estimator)


def test_unrepaired_old_random_forest_fails_the_probe() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # version skew, and feature names on a NumPy probe
        # The trusted fixture, loaded naively: what a service without the repair would run.
        naive = joblib.load(MODELS / EXPECTED["random_forest"]["file"])
        with pytest.raises(ModelFileError, match=r"outside \[0, 1\]"):
            probe(naive, naive.n_features_in_)


def test_random_forest_with_count_leaf_values_is_normalized(tmp_path: Path) -> None:
    """The repair in isolation: a current forest turned into the old storage format."""
    forest, frame = fit_estimator("random_forest", FEATURES, seed=3)
    expected = forest.predict_proba(frame)
    for tree in forest.estimators_:
        state = tree.tree_.__getstate__()
        counts = np.asarray(tree.tree_.n_node_samples, dtype=np.float64)[:, None, None]
        state["values"] = state["values"] * counts
        tree.tree_.__setstate__(state)
    assert forest.predict_proba(frame).max() > 1.0  # really broken now
    joblib.dump(forest, tmp_path / "old.pkl")

    model = load_model(tmp_path / "old.pkl")

    assert np.abs(model.predict_proba(frame.to_numpy()) - expected).max() <= 1e-12


def test_loading_old_models_lets_no_warning_escape(golden_rows: pd.DataFrame) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kind in ("random_forest", "xgboost"):
            spec = EXPECTED[kind]
            model = load_model(MODELS / spec["file"])
            model.predict_proba(golden_rows[spec["features"]].to_numpy(dtype=np.float64))


# --------------------------------------------------------------------------- models of today


@pytest.mark.parametrize("kind", ["random_forest", "xgboost"])
@pytest.mark.parametrize("compress", [0, 3])
def test_trained_pickles_load_and_match_direct_predictions(
    kind: Any, compress: int, tmp_path: Path
) -> None:
    estimator, frame = fit_estimator(kind, FEATURES, seed=7)
    path = tmp_path / "model.pkl"
    joblib.dump(estimator, path, compress=compress)

    model = load_model(path)

    assert model.kind == kind
    assert model.feature_names_in == FEATURES
    assert model.n_features_in == len(FEATURES)
    assert model.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.repairs == ()
    diff = np.abs(model.predict_proba(frame.to_numpy()) - estimator.predict_proba(frame))
    assert diff.max() <= 1e-7


def test_model_factory_writes_a_file_or_returns_bytes(tmp_path: Path) -> None:
    path = train_model("xgboost", FEATURES, path=tmp_path / "sub" / "m.pkl")
    data = train_model("xgboost", FEATURES)

    assert path.read_bytes() == data  # deterministic for a seed
    assert load_model(path).kind == "xgboost"


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_native_files_load_and_match_the_sklearn_model(suffix: str, tmp_path: Path) -> None:
    estimator, frame = fit_estimator("xgboost", FEATURES, seed=5)
    path = tmp_path / f"model{suffix}"
    estimator.save_model(path)

    model = load_model(path)

    assert model.kind == "xgboost"
    assert model.file_format == f"xgboost-{suffix[1:]}"
    assert model.feature_names_in == FEATURES
    diff = np.abs(model.predict_proba(frame.to_numpy()) - estimator.predict_proba(frame))
    assert diff.max() <= 1e-7


def test_predict_proba_refuses_a_matrix_of_the_wrong_width() -> None:
    model = load_model(MODELS / EXPECTED["xgboost"]["file"])

    with pytest.raises(ValueError, match="expects a 2-D matrix with 10 columns"):
        model.predict_proba(np.zeros((3, 4)))


# --------------------------------------------------------------------------- unsafe files


class _RunsShellCommand:
    """A pickle payload: unpickling it runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


def test_pickle_calling_os_system_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps(_RunsShellCommand(f"touch {sentinel}"))
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)

    with pytest.raises(ModelFileError) as refused:
        load_model(path)

    message = str(refused.value)
    assert f"{os.system.__module__}.system" in message  # os.system pickles as posix.system
    assert "refused" in message and str(path) in message
    assert not sentinel.exists()
    # The payload is live: an ordinary unpickler does run it.
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_RunsShellCommand(f"touch {live}")))
    assert live.exists()


def _calling_pickle(module: str, name: str, *args: Any) -> bytes:
    """Protocol-4 bytes that import `module.name` and call it with `args`."""

    def text(s: str) -> bytes:
        raw = s.encode()
        return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE

    return (
        b"\x80\x04"
        + text(module)
        + text(name)
        + b"\x93"
        + pickle.dumps(args, protocol=2)[2:-1]
        + b"R."
    )


@pytest.mark.parametrize(
    ("module", "name", "args"),
    [
        ("os", "system", ("touch {s}",)),
        ("subprocess", "getoutput", ("touch {s}",)),
        ("builtins", "eval", ("open({s!r}, 'w').close()",)),
        ("builtins", "exec", ("open({s!r}, 'w').close()",)),
        ("builtins", "getattr", ("x", "y")),
        # Dotted name: resolves to os.system through a module that imports os.
        ("sklearn.utils.validation", "os.system", ("touch {s}",)),
        # Attributes of an allowed module that are not classes defined by the package:
        # an imported module, a function, a foreign class.
        ("sklearn.base", "inspect", ()),
        ("sklearn.base", "clone", (None,)),
        ("sklearn.base", "defaultdict", ()),
        ("numpy", "memmap", ("{s}", "uint8", "w+", 0, (1,))),
        ("numpy", "load", ("{s}",)),
        ("joblib", "load", ("{s}",)),
        ("xgboost.tracker", "RabitTracker", ("127.0.0.1", 1)),
        ("_codecs", "encode", ("x", "rot13")),
    ],
)
def test_names_outside_the_allow_list_are_refused_before_running(
    module: str, name: str, args: tuple[Any, ...], tmp_path: Path
) -> None:
    sentinel = tmp_path / "sentinel"
    filled = tuple(a.format(s=str(sentinel)) if isinstance(a, str) else a for a in args)
    path = tmp_path / "evil.pkl"
    path.write_bytes(_calling_pickle(module, name, *filled))

    with pytest.raises(ModelFileError, match="refused") as refused:
        load_model(path)

    assert module in str(refused.value) and name.split(".")[0] in str(refused.value)
    assert not sentinel.exists()


def test_object_array_inside_a_joblib_file_goes_through_the_allow_list(tmp_path: Path) -> None:
    """joblib < 1.5 read nested object-array pickles without any restriction."""
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    payload = np.array([_RunsShellCommand(f"touch {sentinel}")], dtype=object)
    joblib.dump({"classes_": payload}, path)

    with pytest.raises(ModelFileError, match="system"):
        load_model(path)
    assert not sentinel.exists()


# --------------------------------------------------------------------------- broken files


@pytest.mark.parametrize("keep", [0.01, 0.5, 0.99])
def test_truncated_model_file_is_refused(keep: float, tmp_path: Path) -> None:
    data = (MODELS / EXPECTED["random_forest"]["file"]).read_bytes()
    path = tmp_path / "truncated.pkl"
    path.write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        load_model(path)


def test_random_bytes_are_refused_as_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "noise.pkl"
    # A leading NUL so that no seed can start with a pickle or compressor magic by chance.
    path.write_bytes(b"\x00" + np.random.default_rng(1).bytes(4096))

    with pytest.raises(ModelFileError, match="unknown model file format"):
        load_model(path)


def test_corrupt_xgboost_json_and_empty_file_are_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"learner": {"oops"')
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")

    with pytest.raises(ModelFileError, match="corrupt or unreadable XGBoost"):
        load_model(broken)
    with pytest.raises(ModelFileError, match="unknown model file format"):
        load_model(empty)
    with pytest.raises(ModelFileError, match="cannot read"):
        load_model(tmp_path / "missing.pkl")


def test_models_that_are_not_two_class_classifiers_are_refused(tmp_path: Path) -> None:
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 3)), columns=["a", "b", "c"])
    regressor = RandomForestRegressor(n_estimators=3).fit(frame, frame["a"])
    joblib.dump(regressor, tmp_path / "regressor.pkl")
    three = RandomForestClassifier(n_estimators=3).fit(frame, np.arange(60) % 3)
    joblib.dump(three, tmp_path / "three.pkl")
    XGBRegressor(n_estimators=3).fit(frame, frame["a"]).save_model(tmp_path / "regressor.json")
    joblib.dump({"not": "a model"}, tmp_path / "dict.pkl")

    with pytest.raises(ModelFileError, match="not a classifier"):
        load_model(tmp_path / "regressor.pkl")
    with pytest.raises(ModelFileError, match="3 classes"):
        load_model(tmp_path / "three.pkl")
    with pytest.raises(ModelFileError, match="not a classifier"):
        load_model(tmp_path / "regressor.json")
    with pytest.raises(ModelFileError, match="not a classifier"):
        load_model(tmp_path / "dict.pkl")


# --------------------------------------------------------------------------- storing


async def _stream(*chunks: bytes, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for i, chunk in enumerate(chunks):
        if fail_after is not None and i == fail_after:
            raise ConnectionResetError("peer went away")
        yield chunk
        await anyio.lowlevel.checkpoint()


async def test_store_model_file_is_named_by_id_and_checksum(tmp_path: Path) -> None:
    data = train_model("random_forest", FEATURES)
    directory = tmp_path / "models"

    path, sha256 = await store_model_file(directory, 42, _stream(data[:1000], data[1000:]))

    assert sha256 == hashlib.sha256(data).hexdigest() == file_sha256(path)
    assert path == directory / f"model_42_{sha256[:8]}.pkl"
    assert path.read_bytes() == data
    assert os.listdir(directory) == [path.name]
    assert load_model(path).sha256 == sha256


async def test_store_model_file_keeps_a_known_extension_only(tmp_path: Path) -> None:
    json_path, _ = await store_model_file(tmp_path, 1, b"{}", suffix=".JSON")
    odd_path, _ = await store_model_file(tmp_path, 2, b"\x80\x04.", suffix=".exe")

    assert json_path.suffix == ".json"
    assert odd_path.suffix == ".pkl"


async def test_failed_store_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ConnectionResetError):
        await store_model_file(tmp_path, 3, _stream(b"a" * 100, b"b" * 100, fail_after=1))
    with pytest.raises(ModelFileError, match="empty"):
        await store_model_file(tmp_path, 4, _stream())

    assert os.listdir(tmp_path) == []


async def test_cancelled_store_leaves_no_file(tmp_path: Path) -> None:
    started = anyio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield b"partial model bytes"
        started.set()
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    async with anyio.create_task_group() as tg:
        tg.start_soon(store_model_file, tmp_path, 5, stalled())
        await started.wait()
        assert len(os.listdir(tmp_path)) == 1  # the temporary file exists meanwhile
        tg.cancel_scope.cancel()

    assert os.listdir(tmp_path) == []


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(io.BytesIO(b"x" * 3_000_000).getvalue())

    assert file_sha256(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


# --------------------------------------------------------------------------- size limits


def _gzip_bomb(expanded_mb: int) -> bytes:
    """A gzip file (joblib's gzip magic) holding a pickle that claims `expanded_mb` MB of zeros.

    Small on disk (about 1/1000 of its expanded size), it decompresses to a
    single length-prefixed bytes object, which pickle reads in one call.
    """
    header = b"\x80\x04\x8e" + struct.pack("<Q", expanded_mb << 20)  # PROTO 4, BINBYTES8
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    megabyte = bytes(1 << 20)
    parts = [compressor.compress(header)]
    parts += [compressor.compress(megabyte) for _ in range(expanded_mb)]
    return b"".join([*parts, compressor.flush()])


def test_a_gzip_bomb_is_refused_at_the_limit_not_decompressed_whole(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pkl"
    path.write_bytes(_gzip_bomb(64))
    assert path.stat().st_size < 200_000

    # Refused by the decompression bound itself, after at most 8 MB were produced.
    with pytest.raises(ModelFileError, match="larger than the limit of 8000000 bytes"):
        load_model(path, max_bytes=8_000_000)


def test_length_prefixes_claiming_more_than_the_file_holds_are_refused_before_allocating(
    tmp_path: Path,
) -> None:
    # BYTEARRAY8 makes pickle allocate (and zero) the claimed length before reading it.
    claims_50_gb = tmp_path / "bytearray.pkl"
    claims_50_gb.write_bytes(b"\x80\x05\x96" + struct.pack("<Q", 50 << 30) + b"x.")
    # A joblib array header whose shape claims 8 GB of float64 (the file holds 24 bytes).
    array = tmp_path / "array.pkl"
    joblib.dump(np.zeros(3), array, protocol=2)
    data = array.read_bytes()
    assert data.count(b"K\x03\x85") == 1  # the shape tuple (3,)
    array.write_bytes(data.replace(b"K\x03\x85", b"J\x00\x00\x00\x40\x85"))

    with pytest.raises(ModelFileError, match="a bytearray of 53687091200 bytes"):
        load_model(claims_50_gb)
    with pytest.raises(ModelFileError, match=r"an array of shape \(1073741824,\)"):
        load_model(array)


def test_a_file_over_the_size_cap_is_refused_naming_the_setting(tmp_path: Path) -> None:
    path = train_model("random_forest", ["a", "b"], path=tmp_path / "rf.pkl")
    size = path.stat().st_size

    with pytest.raises(ModelFileError, match="MODEL_MAX_BYTES"):
        load_model(path, max_bytes=size - 1)
    assert load_model(path, max_bytes=size).kind == "random_forest"


async def test_store_refuses_a_body_over_the_cap_and_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"larger than 1000 bytes \(MODEL_MAX_BYTES\)"):
        await store_model_file(tmp_path, 5, _stream(b"a" * 600, b"b" * 600), max_bytes=1000)
    assert os.listdir(tmp_path) == []
