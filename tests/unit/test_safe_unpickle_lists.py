"""The unpickler's allow-list and deny-list, pinned both ways.

Every entry of the lists has a row here: an allowed entry loads a real object
(or the class itself) through `safe_load`, a denied module or part refuses a
payload naming it before anything is imported. Removing an allowed entry makes
a real model unloadable; removing a denied one lets a file import test or
dataset machinery; adding an entry fails the coverage checks at the end until
it gets its own row here, so every change to the lists is a reviewed decision.
"""

from __future__ import annotations

import collections
import importlib
import io
import pickle
import struct
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import joblib
import numpy as np
import pytest
from model_factory import fit_estimator, make_training_frame
from sklearn.ensemble import RandomForestClassifier
from sklearn.preprocessing import StandardScaler

from storage.model_files import safe_unpickle
from storage.model_files.safe_unpickle import ForbiddenGlobalError, safe_load

# Old files name numpy.core, which NumPy 2 still reads with a deprecation warning.
pytestmark = pytest.mark.filterwarnings("ignore:numpy.core.*deprecated:DeprecationWarning")

LIMIT = 50_000_000
FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio"]


def _text(s: str) -> bytes:
    raw = s.encode()
    return b"\x8c" + bytes([len(raw)]) + raw  # SHORT_BINUNICODE


def _global(module: str, name: str) -> bytes:
    """Protocol-4 bytes whose whole content is the object `module.name` itself."""
    return b"\x80\x04" + _text(module) + _text(name) + b"\x93."


def _call(module: str, name: str, *args: Any) -> bytes:
    """Protocol-4 bytes that call `module.name(*args)` (args pickled at protocol 2)."""
    return b"\x80\x04" + _text(module) + _text(name) + b"\x93" + pickle.dumps(args, 2)[2:-1] + b"R."


def _joblib(obj: object, protocol: int | None = None) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer, protocol=protocol)
    return buffer.getvalue()


def _same_draws(a: Any, b: Any) -> bool:
    """Two random states (or generators) in the same state draw the same numbers."""
    draw = "random_sample" if hasattr(a, "random_sample") else "random"
    return bool(np.array_equal(getattr(a, draw)(5), getattr(b, draw)(5)))


def _forest_with_random_state(protocol: int | None) -> tuple[bytes, Callable[[Any], bool]]:
    frame, y = make_training_frame(FEATURES, seed=3, n_rows=120)
    forest = RandomForestClassifier(
        n_estimators=3, max_depth=3, random_state=np.random.RandomState(0)
    ).fit(frame, y)
    expected = forest.predict_proba(frame)
    return _joblib(forest, protocol), lambda m: bool(
        np.array_equal(m.predict_proba(frame), expected)
        and isinstance(m.random_state, np.random.RandomState)
    )


def _fitted(kind: str, protocol: int | None) -> tuple[bytes, Callable[[Any], bool]]:
    model, frame = fit_estimator(kind, FEATURES, n_estimators=3)  # type: ignore[arg-type]
    expected = model.predict_proba(frame)
    return _joblib(model, protocol), lambda m: bool(np.allclose(m.predict_proba(frame), expected))


def _pickled(obj: Any, protocol: int, same: Callable[[Any, Any], bool] | None = None) -> Any:
    def make() -> tuple[bytes, Callable[[Any], bool]]:
        check = same or (lambda a, b: bool(np.array_equal(a, b)) if isinstance(a, np.ndarray)
                         else a == b and type(a) is type(b))  # fmt: skip
        return pickle.dumps(obj, protocol), lambda loaded: check(loaded, obj)

    return make


def _scaler(protocol: int) -> Any:
    scaler = StandardScaler().fit(np.arange(6.0).reshape(3, 2))
    return _pickled(scaler, protocol, lambda a, b: bool(np.array_equal(a.mean_, b.mean_)))


def _is(module: str, name: str) -> Any:
    def make() -> tuple[bytes, Callable[[Any], bool]]:
        target = getattr(importlib.import_module(module), name)
        return _global(module, name), lambda loaded: loaded is target

    return make


def _generator(bit_generator: type) -> Any:
    return _pickled(np.random.Generator(bit_generator(7)), 4, _same_draws)


_ARRAY = np.arange(3, dtype=np.int64)
_ARRAY_ARGS = (_ARRAY.tobytes(), np.dtype("int64"), (3,), "C")

# (label, what it exercises: list entries as (module, name) or module, bytes factory)
ALLOWED: list[tuple[str, set[Any], Any]] = [
    # Real models, as the Training Service writes them and as older tools wrote them.
    ("forest with RandomState(0)", {("numpy.random._pickle", "__randomstate_ctor"),
     ("numpy.random._pickle", "__bit_generator_ctor"), "numpy.random._mt19937", "MT19937",
     "RandomState", "sklearn"}, lambda: _forest_with_random_state(None)),
    ("forest with RandomState(0), protocol 2", {("_codecs", "encode")},
     lambda: _forest_with_random_state(2)),
    ("forest, protocol 2", {"numpy"}, lambda: _fitted("random_forest", 2)),
    ("xgboost classifier", {"xgboost.sklearn", "xgboost.core"}, lambda: _fitted("xgboost", None)),
    ("xgboost classifier, protocol 2", set(), lambda: _fitted("xgboost", 2)),
    # Protocols 0-2 name builtins `__builtin__` and `copy_reg`, mapped as pickle maps them.
    ("scaler, protocol 0", {("copyreg", "_reconstructor")}, _scaler(0)),
    ("scaler, protocol 1", set(), _scaler(1)),
    ("range, protocol 2 (__builtin__.xrange)", {("builtins", "range")}, _pickled(range(2, 9), 2)),
    ("set, protocol 2 (__builtin__.set)", {("builtins", "set")}, _pickled({1, 2}, 2)),
    ("bytes, protocol 2", {("_codecs", "encode")}, _pickled(b"\x00\xffab", 2)),
    ("bytearray, protocol 2", {("builtins", "bytearray")}, _pickled(bytearray(b"ab"), 2)),
    ("OrderedDict", {("collections", "OrderedDict")}, _pickled(collections.OrderedDict(a=1), 4)),
    # NumPy arrays, scalars and dtypes in every form NumPy 1.x and 2.x write them.
    ("array, protocol 2", {("numpy._core.multiarray", "_reconstruct")}, _pickled(_ARRAY, 2)),
    ("array, NumPy 1.x names", {("numpy.core.multiarray", "_reconstruct")},
     lambda: (pickle.dumps(_ARRAY, 2).replace(b"numpy._core.", b"numpy.core."),
              lambda a: bool(np.array_equal(a, _ARRAY)))),
    ("array, protocol 5", {("numpy._core.numeric", "_frombuffer")}, _pickled(_ARRAY, 5)),
    ("array, NumPy 1.x _frombuffer", {("numpy.core.numeric", "_frombuffer")},
     lambda: (_call("numpy.core.numeric", "_frombuffer", *_ARRAY_ARGS),
              lambda a: bool(np.array_equal(a, _ARRAY)))),
    ("scalar", {("numpy._core.multiarray", "scalar")}, _pickled(np.float64(2.5), 4)),
    ("scalar, NumPy 1.x names", {("numpy.core.multiarray", "scalar")},
     lambda: (pickle.dumps(np.float64(2.5), 2).replace(b"numpy._core.", b"numpy.core."),
              lambda a: a == 2.5 and type(a) is np.float64)),
    ("dtype class", {"numpy.dtypes"}, _pickled(np.dtypes.Float64DType, 4, lambda a, b: a is b)),
    # Random states and generators of every bit generator.
    ("RandomState (pre-1.17 constructor)", {("numpy.random", "__RandomState_ctor")},
     lambda: (_call("numpy.random", "__RandomState_ctor"),
              lambda a: isinstance(a, np.random.RandomState))),
    ("Generator(PCG64)", {("numpy.random._pickle", "__generator_ctor"), "numpy.random._pcg64",
     "PCG64"}, _generator(np.random.PCG64)),
    ("Generator(PCG64DXSM)", {"PCG64DXSM"}, _generator(np.random.PCG64DXSM)),
    ("Generator(Philox)", {"numpy.random._philox", "Philox"}, _generator(np.random.Philox)),
    ("Generator(SFC64)", {"numpy.random._sfc64", "SFC64"}, _generator(np.random.SFC64)),
    ("SeedSequence", {("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
     "numpy.random.bit_generator", "SeedSequence"},
     _pickled(np.random.SeedSequence(5), 4, lambda a, b: a.entropy == b.entropy)),
    # Classes reached by other names than a current pickle writes.
    ("numpy.random.RandomState", {"numpy.random"}, _is("numpy.random", "RandomState")),
    ("numpy.random.mtrand.RandomState", {"numpy.random.mtrand"},
     _is("numpy.random.mtrand", "RandomState")),
    ("Generator class", {"numpy.random._generator", "Generator"},
     _is("numpy.random._generator", "Generator")),
    ("xgboost.XGBClassifier", {"xgboost"}, _is("xgboost", "XGBClassifier")),
    ("copyreg.__newobj__", {("copyreg", "__newobj__")},
     lambda: (_call("copyreg", "__newobj__", StandardScaler),
              lambda a: type(a) is StandardScaler)),
    ("copyreg.__newobj_ex__", {("copyreg", "__newobj_ex__")},
     lambda: (_call("copyreg", "__newobj_ex__", StandardScaler, (), {}),
              lambda a: type(a) is StandardScaler)),
    *(
        (f"builtins.{t.__name__}", {("builtins", t.__name__)}, _is("builtins", t.__name__))
        for t in safe_unpickle._SAFE_BUILTINS
    ),
]  # fmt: skip


@pytest.mark.parametrize(("label", "entries", "make"), ALLOWED, ids=[r[0] for r in ALLOWED])
def test_every_allowed_entry_loads_a_real_object(label: str, entries: set[Any], make: Any) -> None:
    data, same = make()
    loaded = safe_load(data, max_bytes=LIMIT)
    assert same(loaded), (label, loaded)


_PART = "this part of scikit-learn is not allowed"
_LIST = "not in the allow-list"
_FUNCTION = "only classes may be loaded from this module"

# (module, name, the list entry whose removal would let it load, the reason the
# refusal gives). Refused before import.
DENIED: list[tuple[str, str, str, str]] = [
    ("sklearn.utils._testing", "TempMemmap", "_testing", _PART),  # imports pytest
    ("sklearn.utils.tests.test_validation", "test_as_float_array", "tests", _PART),
    ("sklearn.utils.testing", "TempMemmap", "testing", _PART),  # the name before scikit-learn 0.24
    ("sklearn.conftest", "pyplot", "conftest", _PART),
    ("sklearn.datasets._base", "Bunch", "datasets", _PART),  # fetches data over the network
    ("sklearn.externals._packaging.version", "Version", "externals", _PART),
    ("sklearn._build_utils", "gen_from_templates", "_build_utils", _PART),
    ("xgboost.tracker", "RabitTracker", "xgboost modules", _LIST),  # opens sockets
    ("xgboost.dask", "DaskXGBClassifier", "xgboost modules", _LIST),
    ("xgboost.spark", "SparkXGBClassifier", "xgboost modules", _LIST),
    ("xgboost.collective", "init", "xgboost modules", _LIST),
    ("numpy.lib.format", "open_memmap", "numpy modules", _LIST),  # opens files
    ("numpy.ctypeslib", "load_library", "numpy modules", _LIST),
    ("numpy", "memmap", "numpy types", "not an allowed NumPy type"),  # opens files
    ("numpy", "load", "numpy types", _FUNCTION),
    ("numpy.random", "BitGenerator", "numpy random classes", "not an allowed NumPy random type"),
    ("numpy.random.mtrand", "seed", "numpy random classes", _FUNCTION),
    ("numpy.random._pickle", "__import__", "numpy random classes", _LIST),
    ("builtins", "eval", "builtins", _LIST),
    ("builtins", "getattr", "builtins", _LIST),
    ("builtins", "memoryview", "builtins", _LIST),
    ("copyreg", "add_extension", "exact names", _LIST),
    ("_codecs", "decode", "exact names", _LIST),
    ("os", "system", "everything else", _LIST),
    ("sklearn.base", "inspect.os", "dotted names", "dotted or invalid names are not allowed"),
]


@pytest.mark.parametrize(
    ("module", "name", "entry", "reason"), DENIED, ids=[f"{m}.{n}" for m, n, _, _ in DENIED]
)
def test_every_denied_module_or_part_is_refused_before_import(
    module: str, name: str, entry: str, reason: str
) -> None:
    imported = module in sys.modules
    with pytest.raises(ForbiddenGlobalError) as refused:
        safe_load(_global(module, name), max_bytes=LIMIT)
    assert (refused.value.module, refused.value.name) == (module, name)
    assert str(refused.value) == (
        f"refused to load {module}.{name} from the pickle: {reason} "
        "(a model file may only contain scikit-learn, XGBoost and NumPy types)"
    )
    if not imported:
        assert module not in sys.modules, f"{module} was imported before it was refused"


def test_a_module_admitted_for_old_files_still_refuses_classes_it_only_imports() -> None:
    """`xgboost.compat` is allowed (old label encoders), but its classes today are
    scikit-learn's: the module passes, the class is refused as not XGBoost's own."""
    with pytest.raises(ForbiddenGlobalError, match="defined in 'sklearn'"):
        safe_load(_global("xgboost.compat", "XGBClassifierBase"), max_bytes=LIMIT)


def _exercised() -> set[Any]:
    return set().union(*(entries for _, entries, _ in ALLOWED))


def test_every_exact_name_and_allowed_module_has_a_row() -> None:
    exercised = _exercised()
    assert set(safe_unpickle._EXACT) | set(safe_unpickle._REPLACED) <= exercised
    assert exercised >= safe_unpickle._NUMPY_MODULES
    assert exercised >= safe_unpickle._NUMPY_RANDOM_CLASSES
    assert safe_unpickle._XGBOOST_MODULES - {"xgboost.compat"} <= exercised
    assert {m for m, _, _, _ in DENIED if m.startswith("xgboost")}.isdisjoint(
        safe_unpickle._XGBOOST_MODULES
    )


def test_the_lists_hold_exactly_the_entries_pinned_here() -> None:
    """A new entry must come with a row above (a real object it admits, or a payload
    it refuses): this fails until the tables are extended along with the list."""
    exercised = _exercised()
    names = {e for e in exercised if isinstance(e, tuple)}
    modules = {
        e for e in exercised if (isinstance(e, str) and "." in e) or e in ("numpy", "xgboost")
    }
    assert set(safe_unpickle._EXACT) | set(safe_unpickle._REPLACED) == names
    assert {m for m in modules if m.startswith("numpy")} == safe_unpickle._NUMPY_MODULES
    assert {m for m in modules if m.startswith("xgboost")} | {
        "xgboost.compat"
    } == safe_unpickle._XGBOOST_MODULES
    assert {
        e for e in exercised if isinstance(e, str) and e[0].isupper()
    } == safe_unpickle._NUMPY_RANDOM_CLASSES
    assert {
        entry for m, _, entry, _ in DENIED if m.startswith("sklearn.") and entry in m.split(".")
    } == safe_unpickle._SKLEARN_DENIED_PARTS


# ---- the size limit, on every way the unpickler reads (unit level; the integration
# tests send decompression bombs through the API)


def test_a_file_larger_than_the_limit_is_refused_at_the_limit() -> None:
    data, _ = _fitted("random_forest", None)
    assert safe_load(data, max_bytes=len(data))  # exactly the limit loads
    with pytest.raises(
        safe_unpickle.SizeLimitError,
        match=f"^the decompressed model file is larger than the limit of {len(data) - 1} bytes$",
    ):
        safe_load(data, max_bytes=len(data) - 1)


def _gzip_bomb(head: bytes, filler: bytes, megabytes: int, tail: bytes) -> bytes:
    """A gzip file (a format joblib reads) of `head`, `megabytes` MB of `filler`, `tail`."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    chunk = filler * ((1 << 20) // len(filler))
    parts = [compressor.compress(head)]
    parts += [compressor.compress(chunk) for _ in range(megabytes)]
    return b"".join([*parts, compressor.compress(tail), compressor.flush()])


@pytest.mark.parametrize(
    "bomb",
    [
        _gzip_bomb(b"S'", b"a", 64, b"'\n."),  # protocol 0: one 64 MB line (`readline`)
        _gzip_bomb(b"\x80\x04\x8e" + struct.pack("<Q", 64 << 20), b"\0", 64, b"."),  # one read
    ],
    ids=["one line", "one length-prefixed blob"],
)
def test_a_decompression_bomb_is_refused_without_expanding_in_memory(bomb: bytes) -> None:
    """64 MB behind a 1 MB limit: refused after about the limit was decompressed. A read
    that took the whole value from the stream before counting it would hold all of it."""
    assert len(bomb) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(safe_unpickle.SizeLimitError, match="limit of 1048576 bytes"):
            safe_load(bomb, max_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MB held while refusing a 1 MB limit"


def test_protocol_0_lines_and_protocol_5_bytearrays_count_towards_the_limit() -> None:
    text = pickle.dumps("x" * 1000, 0)  # read line by line
    blob = pickle.dumps(bytearray(b"y" * 1000), 5)  # BYTEARRAY8, read into a buffer
    assert safe_load(text, max_bytes=len(text)) == "x" * 1000
    # (pickle reads a frame ahead, so a framed bytearray needs its own size spare)
    assert safe_load(blob, max_bytes=2 * len(blob)) == bytearray(b"y" * 1000)
    for data in (text, blob):
        with pytest.raises(safe_unpickle.SizeLimitError):
            safe_load(data, max_bytes=len(data) - 10)


def test_a_bytearray_claiming_more_than_the_file_holds_is_refused_before_allocation() -> None:
    for claim in (1 << 40, (1 << 64) - 1):  # the largest length is no negative number
        data = b"\x80\x05\x96" + claim.to_bytes(8, "little") + b"tiny."
        with pytest.raises(
            safe_unpickle.SizeLimitError,
            match=f"^a bytearray of {claim} bytes is larger than the limit of 1048576 bytes$",
        ):
            safe_load(data, max_bytes=1 << 20)


def test_an_array_whose_header_claims_more_than_the_file_holds_is_refused() -> None:
    data = _joblib(np.zeros(1000), 2)  # protocol 2: no frames whose lengths would change
    shape = b"M\xe8\x03\x85"  # BININT2 1000, TUPLE1: the shape (1000,)
    assert data.count(shape) == 1
    forged = data.replace(shape, b"J\xff\xff\xff\x7f\x85")  # (2**31 - 1,)
    with pytest.raises(
        safe_unpickle.SizeLimitError,
        match=r"^an array of shape \(2147483647,\) is larger than the limit of 1048576 bytes$",
    ):
        safe_load(forged, max_bytes=1 << 20)


@pytest.mark.parametrize(
    "array",
    [np.zeros(0), np.zeros((3, 0), dtype=np.int32), np.array([], dtype=object)],
    ids=["float64 (0,)", "int32 (3, 0)", "object (0,)"],
)
def test_arrays_without_elements_load(array: np.ndarray) -> None:
    """A fitted model can hold empty arrays; the size check must not refuse them."""
    loaded = safe_load(_joblib(array), max_bytes=LIMIT)
    assert (loaded.shape, loaded.dtype) == (array.shape, array.dtype)


def test_arrays_written_big_endian_load_in_native_byte_order() -> None:
    """A model pickled on a big-endian machine: joblib turns its arrays to the native
    order on load (compiled code such as scikit-learn's trees reads them raw)."""
    array = np.arange(4, dtype=">i8")
    loaded = safe_load(_joblib(array), max_bytes=LIMIT)
    assert loaded.dtype == np.dtype("int64") and loaded.dtype.isnative
    assert loaded.tolist() == [0, 1, 2, 3]


def test_an_object_array_is_read_through_the_allow_list_and_the_limit() -> None:
    """joblib stores an object array as a nested pickle: a bytearray in it is read
    with the same bounded reader (and a refused name in it is refused)."""
    array = np.array([bytearray(b"ab"), "x", 3], dtype=object)
    assert list(safe_load(_joblib(array, 5), max_bytes=LIMIT)) == list(array)
    hostile = np.array([collections.OrderedDict(a=1)], dtype=object)
    data = _joblib(hostile, 5).replace(b"OrderedDict", b"defaultdict")
    with pytest.raises(ForbiddenGlobalError, match=r"collections\.defaultdict"):
        safe_load(data, max_bytes=LIMIT)


def test_python_2_names_are_mapped_below_protocol_3_only_as_pickle_maps_them() -> None:
    """`__builtin__.set` is `builtins.set` in a protocol-2 pickle; in a protocol-3 one
    it names a module that does not exist, and is refused by name."""
    call_set = b"c__builtin__\nset\n)R."
    assert safe_load(b"\x80\x02" + call_set, max_bytes=LIMIT) == set()
    with pytest.raises(
        ForbiddenGlobalError, match=r"__builtin__\.set from the pickle: not in the allow-list"
    ):
        safe_load(b"\x80\x03" + call_set, max_bytes=LIMIT)


def test_bytes_of_old_pickles_are_encoded_as_latin_1_only() -> None:
    assert safe_load(_call("_codecs", "encode", "\xff", "latin-1"), max_bytes=LIMIT) == b"\xff"
    with pytest.raises(
        ForbiddenGlobalError,
        match=r"^refused to load _codecs\.encode from the pickle: codec 'utf-8' is not latin-1",
    ):
        safe_load(_call("_codecs", "encode", "x", "utf-8"), max_bytes=LIMIT)


def test_the_multi_file_format_of_joblib_before_0_10_is_refused_by_name() -> None:
    with pytest.raises(pickle.UnpicklingError, match=r"joblib < 0\.10 multi-file format"):
        safe_load(b"ZF0x00000000000000" + bytes(20), max_bytes=LIMIT)
