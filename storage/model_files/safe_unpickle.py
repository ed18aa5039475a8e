"""Unpickling model files without letting them run code.

A pickle can call any importable callable while it loads (`os.system`,
`subprocess.Popen`, `builtins.eval` ...). Every callable or class a pickle
uses is looked up through `find_class`, so refusing everything there except
a short allow-list (scikit-learn and XGBoost classes, the NumPy types and
reconstructors, a few harmless builtins) means a hostile file fails before
anything it names is executed. The check runs before a module is imported,
so a pickle cannot even trigger the import of a module outside the list.

joblib writes NumPy arrays as raw bytes between pickle opcodes, read back by
its `NumpyUnpickler`; we subclass it so those arrays still load. Arrays of
Python objects are stored as a nested pickle, which joblib before 1.5 read
with an unrestricted `pickle.load`; our own array wrapper reads them through
the allow-list too, whatever the joblib version.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import io
import pickle
import struct
from collections.abc import Callable
from typing import IO, Any, Final

import numpy as np

# joblib's unpickler and compressor detection are not public API, but they are
# the only way to read joblib's format faithfully (raw array bytes inside the
# pickle stream, optional compression). Kept to this module.
from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler
from joblib.numpy_pickle_utils import _COMPRESSORS, _detect_compressor

from storage.errors import StorageError
from storage.model_files.structure import CHECKED_CLASSES, numbering_trees

__all__ = ["ForbiddenGlobalError", "SizeLimitError", "is_joblib_or_pickle", "safe_load"]


class ForbiddenGlobalError(StorageError, pickle.UnpicklingError):
    """The pickle names a class or function outside the allow-list."""

    code = "forbidden_global"

    def __init__(self, module: str, name: str, reason: str) -> None:
        self.module = module
        self.name = name
        super().__init__(
            f"refused to load {module}.{name} from the pickle: {reason} "
            "(a model file may only contain scikit-learn, XGBoost and NumPy types)"
        )


class SizeLimitError(StorageError, pickle.UnpicklingError):
    """The pickle (after decompression) or one of its arrays is larger than allowed."""

    code = "too_large"

    def __init__(self, limit: int, what: str) -> None:
        super().__init__(f"{what} is larger than the limit of {limit} bytes")


def _latin1_encode(text: str, encoding: str) -> bytes:
    """`_codecs.encode`, as protocol-2 pickles use it for bytes, limited to latin-1.

    The real function would look up any codec by name; pickle only ever writes
    `encode(text, "latin1")`, so that is the one call accepted (any other fails).
    """
    if codecs.lookup(encoding).name != "iso8859-1":
        raise ForbiddenGlobalError("_codecs", "encode", f"codec {encoding!r} is not latin-1")
    return text.encode("latin1")


# Builtin types whose construction has no side effects (containers, numbers, bytes).
_SAFE_BUILTINS: Final[tuple[type, ...]] = (
    object, bool, int, float, complex, str, bytes, bytearray,
    tuple, list, dict, set, frozenset, slice, range,
)  # fmt: skip

# Functions (and non-package classes) a model pickle genuinely needs, by exact name.
_EXACT: Final[frozenset[tuple[str, str]]] = frozenset(
    {
        ("copyreg", "_reconstructor"),
        ("copyreg", "__newobj__"),
        ("copyreg", "__newobj_ex__"),
        ("collections", "OrderedDict"),
        *(
            (module, name)
            for module in ("numpy.core.multiarray", "numpy._core.multiarray")
            for name in ("_reconstruct", "scalar")
        ),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.random", "__RandomState_ctor"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        *(("builtins", t.__name__) for t in _SAFE_BUILTINS),
    }
)

_REPLACED: Final[dict[tuple[str, str], Callable[..., Any]]] = {
    ("_codecs", "encode"): _latin1_encode,
}

# Modules whose NumPy types may appear (arrays, dtypes, scalars, random states).
_NUMPY_MODULES: Final[frozenset[str]] = frozenset(
    {
        "numpy",
        "numpy.dtypes",
        "numpy.random",
        "numpy.random.mtrand",
        "numpy.random._generator",
        "numpy.random.bit_generator",
        "numpy.random._mt19937",
        "numpy.random._pcg64",
        "numpy.random._philox",
        "numpy.random._sfc64",
    }
)
_NUMPY_RANDOM_CLASSES: Final[frozenset[str]] = frozenset(
    {
        "RandomState",
        "Generator",
        "SeedSequence",
        "MT19937",
        "PCG64",
        "PCG64DXSM",
        "Philox",
        "SFC64",
    }
)
# XGBoost modules holding the estimator, the booster and old label encoders;
# others (tracker, dask, spark) open sockets or start processes.
_XGBOOST_MODULES: Final[frozenset[str]] = frozenset(
    {"xgboost", "xgboost.sklearn", "xgboost.core", "xgboost.compat"}
)
# Parts of scikit-learn that a fitted estimator never needs and that import
# test machinery or fetch data.
_SKLEARN_DENIED_PARTS: Final[frozenset[str]] = frozenset(
    {"tests", "_testing", "testing", "conftest", "datasets", "externals", "_build_utils"}
)


def _module_verdict(module: str, name: str) -> str | None:
    """Why (module, name) is refused before anything is imported, or None to go on."""
    if (module, name) in _EXACT or (module, name) in _REPLACED:
        return None
    if not name.isidentifier():
        # Protocol 4 resolves dotted names attribute by attribute, which would
        # reach `os.system` through any allowed module that imported `os`.
        return "dotted or invalid names are not allowed"
    root = module.partition(".")[0]
    if root == "sklearn":
        if _SKLEARN_DENIED_PARTS.intersection(module.split(".")):
            return "this part of scikit-learn is not allowed"
        return None
    if module in _XGBOOST_MODULES or module in _NUMPY_MODULES:
        return None
    return "not in the allow-list"


def _object_verdict(module: str, name: str, obj: object) -> str | None:
    """Why a resolved object is refused, or None when it is an allowed class."""
    if (module, name) in _EXACT:
        return None
    if not isinstance(obj, type):
        return "only classes may be loaded from this module"
    defined_in = (getattr(obj, "__module__", None) or "").partition(".")[0]
    root = module.partition(".")[0]
    if root in ("sklearn", "xgboost"):
        # A module may import a foreign class (e.g. `Popen`); only classes
        # defined by the package itself are trusted.
        return None if defined_in == root else f"class is defined in {defined_in!r}"
    if root == "numpy":
        if module.startswith("numpy.random"):
            return None if name in _NUMPY_RANDOM_CLASSES else "not an allowed NumPy random type"
        # ndarray itself, scalar types and dtypes; not memmap (it opens files).
        if obj is np.ndarray or issubclass(obj, np.generic | np.dtype):
            return None
        return "not an allowed NumPy type"
    return "not in the allow-list"


def _find_allowed(
    unpickler: pickle._Unpickler, module: str, name: str, find: Callable[[str, str], Any]
) -> Any:
    """`find_class` through the allow-list; `find` is the unrestricted lookup."""
    # Map Python 2 names first, exactly as pickle itself does below protocol 3 (our
    # unpicklers keep its fix_imports=True), so the check sees the module that will
    # really be imported.
    if unpickler.proto < 3:  # type: ignore[attr-defined]  # set by pickle, not in its stubs
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
    if (module, name) == ("joblib.numpy_pickle", "NumpyArrayWrapper"):
        return _GuardedArrayWrapper
    reason = _module_verdict(module, name)
    if reason is not None:
        raise ForbiddenGlobalError(module, name, reason)
    replaced = _REPLACED.get((module, name))
    if replaced is not None:
        return replaced
    obj = find(module, name)
    reason = _object_verdict(module, name, obj)
    if reason is not None:
        raise ForbiddenGlobalError(module, name, reason)
    # Trees and boosters are built through subclasses that check their structure first.
    return CHECKED_CLASSES.get(obj, obj)


def _load_bytearray8(unpickler: Any) -> None:
    """BYTEARRAY8, refused before allocation when it claims more than the stream has left.

    pickle allocates (and zero-fills) the bytearray from the length prefix
    before reading it: 20 bytes could otherwise claim gigabytes of memory.
    """
    (length,) = struct.unpack("<Q", unpickler.read(8))
    reader = unpickler.bounded_reader
    if length > reader.remaining:
        raise SizeLimitError(reader.limit, f"a bytearray of {length} bytes")
    data = bytearray(length)
    unpickler.readinto(data)
    unpickler.append(data)


class _AllowListUnpickler(NumpyUnpickler):  # type: ignore[misc]
    """joblib's unpickler with `find_class` limited to the allow-list."""

    dispatch = NumpyUnpickler.dispatch.copy()
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8

    def __init__(self, reader: _BoundedReader) -> None:
        super().__init__("", reader, ensure_native_byte_order=True)
        self.bounded_reader = reader

    def find_class(self, module: str, name: str) -> Any:
        return _find_allowed(self, module, name, super().find_class)


class _NestedAllowListUnpickler(pickle._Unpickler):
    """For the nested pickle of an object array: plain pickle, same allow-list and limits."""

    dispatch = pickle._Unpickler.dispatch.copy()
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8

    def __init__(self, reader: _BoundedReader) -> None:
        super().__init__(reader)
        self.bounded_reader = reader

    def find_class(self, module: str, name: str) -> Any:
        return _find_allowed(self, module, name, super().find_class)


class _GuardedArrayWrapper(NumpyArrayWrapper):  # type: ignore[misc]
    """joblib's array placeholder, reading object arrays through the allow-list.

    joblib allocates the array from the shape in its header before reading the
    data; a header claiming more bytes than the stream may still yield is
    refused before that allocation.
    """

    def read_array(self, unpickler: Any, *args: Any, **kwargs: Any) -> Any:
        reader = unpickler.bounded_reader
        if self.dtype.hasobject:
            return _NestedAllowListUnpickler(reader).load()
        count = 1
        for extent in self.shape:
            count *= int(extent)
        if count < 0 or count * self.dtype.itemsize > reader.remaining:
            raise SizeLimitError(reader.limit, f"an array of shape {tuple(self.shape)}")
        return super().read_array(unpickler, *args, **kwargs)


class _BoundedReader:
    """The decompressed pickle, as pickle and joblib read it, yielding at most `limit`
    bytes in total.

    Wrapped around the decompressed pickle so a small compressed file cannot
    expand into gigabytes: pickle asks for a length-prefixed blob in one `read`
    and for a protocol-0 value as one `readline`, and neither takes more than one
    byte past the limit from the stream before it raises. Those two calls are all
    pickle and joblib's array reader make of a file.
    """

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self._inner = inner
        self.limit = limit
        self._consumed = 0

    @property
    def remaining(self) -> int:
        return self.limit - self._consumed

    def _take(self, data: bytes) -> bytes:
        self._consumed += len(data)
        if self._consumed > self.limit:
            raise SizeLimitError(self.limit, "the decompressed model file")
        return data

    def read(self, size: int) -> bytes:
        return self._take(self._inner.read(min(size, self.remaining + 1)))

    def readline(self) -> bytes:
        return self._take(self._inner.readline(self.remaining + 1))


def is_joblib_or_pickle(head: bytes) -> bool:
    """Whether the first bytes look like a (possibly compressed) joblib or pickle file."""
    if head.startswith(b"\x80"):  # PROTO opcode: pickle protocol 2 or newer
        return True
    return any(head.startswith(c.prefix) for c in _COMPRESSORS.values())


def safe_load(data: bytes, *, max_bytes: int) -> Any:
    """Load a joblib (or plain pickle) file's bytes through the allow-list.

    At most `max_bytes` are read after decompression, and no array larger than
    what is left of them is allocated (`SizeLimitError`). Raises
    `ForbiddenGlobalError` for a refused name and whatever the pickle machinery
    raises (`UnpicklingError`, `EOFError`, `ValueError` ...) for a corrupt or
    truncated file; the caller turns all of them into a clear error.
    """
    fileobj: IO[bytes] = io.BytesIO(data)
    compressor = _detect_compressor(fileobj)
    if compressor == "compat":
        # joblib < 0.10 kept arrays in side files it loads with np.load;
        # nothing the Training Service writes, and not safe to follow.
        raise pickle.UnpicklingError("joblib < 0.10 multi-file format is not supported")
    if compressor in _COMPRESSORS:
        fileobj = io.BufferedReader(_COMPRESSORS[compressor].decompressor_file(fileobj))
    unpickler = _AllowListUnpickler(_BoundedReader(fileobj, max_bytes))
    with numbering_trees():
        return unpickler.load()
