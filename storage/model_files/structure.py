"""Structural checks of a model's trees before native code walks them.

scikit-learn's `Tree.predict` and XGBoost's predictor follow child and feature
indices straight out of the model file, without bounds checks: one node whose
left child is 10**9 segfaults the process (and a child pointing back up the
tree loops forever). So every tree is checked here, in Python, before either
library touches it:

- RandomForest: each `Tree` of a pickle is built through `CheckedTree`, which
  checks the constructor arguments and the pickled state (node arrays, value
  array) before scikit-learn's own `__setstate__` copies them into C memory.
- XGBoost: each `Booster` of a pickle is built through `CheckedBooster`, which
  parses the serialized model (UBJSON or JSON, with the small reader below)
  and checks it before XGBoost deserializes it; native JSON/UBJ model files go
  through `check_booster_bytes` before `load_model`.

What is checked (for both): child indices in range or the leaf marker -1 on
both sides, every node the child of at most one node (so the reachable part is
a tree: no cycle, no shared subtree), feature indices of reachable splits below
the number of features, finite thresholds and leaf values, array lengths equal
to the declared node count, value shapes matching classes and outputs, and for
XGBoost the tree count as declared. Anything these checks miss still runs first
in a resource-limited child process (storage.model_files.probe).
"""

from __future__ import annotations

import json
import math
import operator
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final

import numpy as np
from sklearn.tree._tree import Tree
from xgboost.core import Booster

from storage.errors import StorageError

__all__ = [
    "CHECKED_CLASSES",
    "CheckedBooster",
    "CheckedTree",
    "ModelStructureError",
    "check_booster_bytes",
    "check_booster_document",
    "check_forest",
    "check_tree_state",
    "numbering_trees",
]

LEAF: Final = -1
# Far beyond any model the Training Service trains; bounds what a header may make us allocate.
_MAX_FEATURES: Final = 1_000_000
_MAX_CLASSES: Final = 100_000
_MAX_OUTPUTS: Final = 1_000
_MAX_NESTING: Final = 64
_NODE_FIELDS: Final = (
    "left_child",
    "right_child",
    "feature",
    "threshold",
    "impurity",
    "n_node_samples",
    "weighted_n_node_samples",
)


class ModelStructureError(StorageError, ValueError):
    """A tree or booster is malformed; the message names the tree, node and defect."""

    code = "malformed_model"


# Trees set up so far by the pickle being loaded: they arrive in `estimators_` order,
# so a message can say "tree 3" rather than just "a tree".
_trees_set: ContextVar[list[int] | None] = ContextVar("trees_set", default=None)


@contextmanager
def numbering_trees() -> Iterator[None]:
    """Number the trees of one load in messages (safe_load wraps each unpickling in it)."""
    token = _trees_set.set([0])
    try:
        yield
    finally:
        _trees_set.reset(token)


def _int(value: Any, what: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise ModelStructureError(f"{what} is not an integer ({value!r})") from None


def _int_text(value: Any, what: str) -> int:
    """XGBoost writes integer parameters as strings ("15")."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ModelStructureError(f"{what} is not an integer ({value[:40]!r})") from None
    return _int(value, what)


def _in_range(value: int, low: int, high: int, what: str) -> int:
    if not low <= value <= high:
        raise ModelStructureError(f"{what} is {value}, outside {low}..{high}")
    return value


# --------------------------------------------------------------------------- trees (shared)


def _topology(where: str, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check the child arrays; return (reachable inner nodes, reachable nodes) as masks.

    Leaves have -1 on both sides; an inner node's children are other nodes
    (never the root), and no node is the child of two nodes. With the root
    nobody's child, the nodes reachable from it then form a tree: the walk
    below ends after at most `n` levels, and so does every prediction.
    """
    n = len(left)
    if len(right) != n:
        raise ModelStructureError(f"{where}: {n} left children but {len(right)} right children")
    leaf = left == LEAF
    mixed = np.flatnonzero(leaf != (right == LEAF))
    if mixed.size:
        i = int(mixed[0])
        raise ModelStructureError(
            f"{where} node {i}: left child {int(left[i])} and right child {int(right[i])} "
            "(a leaf has -1 on both sides)"
        )
    inner = ~leaf
    for side, children in (("left", left), ("right", right)):
        bad = np.flatnonzero(inner & ((children < 1) | (children >= n)))
        if bad.size:
            i = int(bad[0])
            raise ModelStructureError(
                f"{where} node {i}: {side} child {int(children[i])} is out of range "
                f"(the tree has {n} nodes)"
            )
    parents = np.bincount(np.concatenate((left[inner], right[inner])), minlength=n)
    shared = np.flatnonzero(parents > 1)
    if shared.size:
        raise ModelStructureError(
            f"{where} node {int(shared[0])} is the child of {int(parents[shared[0]])} nodes"
        )
    reached = np.zeros(n, dtype=bool)
    frontier = np.zeros(1, dtype=np.int64)
    while frontier.size:
        reached[frontier] = True
        split = frontier[inner[frontier]]
        frontier = np.concatenate((left[split], right[split]))
    return reached & inner, reached


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


# --------------------------------------------------------------------------- scikit-learn


def _check_tree_args(n_features: Any, n_classes: Any, n_outputs: Any) -> None:
    _in_range(_int(n_features, "tree n_features"), 1, _MAX_FEATURES, "tree n_features")
    outputs = _in_range(_int(n_outputs, "tree n_outputs"), 1, _MAX_OUTPUTS, "tree n_outputs")
    if not isinstance(n_classes, np.ndarray) or n_classes.dtype.kind not in "iu":
        raise ModelStructureError("tree n_classes is not an integer array")
    if n_classes.shape != (outputs,):
        raise ModelStructureError(
            f"tree n_classes has shape {n_classes.shape}, expected ({outputs},) for its outputs"
        )
    if n_classes.min() < 1 or n_classes.max() > _MAX_CLASSES:
        raise ModelStructureError(f"tree n_classes {n_classes.tolist()} is out of range")


def check_tree_state(tree: Tree, state: Any, where: str = "tree") -> None:
    """Check a scikit-learn tree's pickled state against the tree it is set on."""
    if not isinstance(state, Mapping):
        raise ModelStructureError(f"{where}: the pickled state is not a dict")
    nodes, values = state.get("nodes"), state.get("values")
    if not isinstance(nodes, np.ndarray) or nodes.ndim != 1 or nodes.dtype.names is None:
        raise ModelStructureError(f"{where}: nodes is not a 1-D record array")
    missing = [name for name in _NODE_FIELDS if name not in nodes.dtype.names]
    if missing:
        raise ModelStructureError(f"{where}: nodes lack the fields {', '.join(missing)}")
    n = len(nodes)
    node_count = _int(state.get("node_count"), f"{where} node_count")
    if node_count != n or n < 1:
        raise ModelStructureError(
            f"{where}: node_count is {node_count} but the node array holds {n} nodes"
        )
    expected = (n, int(tree.n_outputs), int(np.max(tree.n_classes)))
    if not isinstance(values, np.ndarray) or values.dtype.kind != "f":
        raise ModelStructureError(f"{where}: values is not a float array")
    if values.shape != expected:
        raise ModelStructureError(
            f"{where}: value array has shape {values.shape}, expected {expected} "
            "(nodes, outputs, classes)"
        )
    if not np.isfinite(values).all():
        raise ModelStructureError(f"{where}: value array holds non-finite numbers")

    left = np.asarray(nodes["left_child"], dtype=np.int64)
    right = np.asarray(nodes["right_child"], dtype=np.int64)
    inner, _ = _topology(where, left, right)
    feature = np.asarray(nodes["feature"], dtype=np.int64)
    bad = inner & ((feature < 0) | (feature >= tree.n_features))
    if bad.any():
        i = _first(bad)
        raise ModelStructureError(
            f"{where} node {i}: feature index {int(feature[i])} is out of range "
            f"(the model has {tree.n_features} features)"
        )
    threshold = np.asarray(nodes["threshold"], dtype=np.float64)
    bad = inner & ~np.isfinite(threshold)
    if bad.any():
        i = _first(bad)
        raise ModelStructureError(f"{where} node {i}: threshold {threshold[i]} is not finite")
    samples = np.asarray(nodes["n_node_samples"], dtype=np.int64)
    weighted = np.asarray(nodes["weighted_n_node_samples"], dtype=np.float64)
    impurity = np.asarray(nodes["impurity"], dtype=np.float64)
    if (samples < 0).any() or not np.isfinite(weighted).all() or (weighted < 0).any():
        i = _first((samples < 0) | ~np.isfinite(weighted) | (weighted < 0))
        raise ModelStructureError(f"{where} node {i}: negative or non-finite sample counts")
    if not np.isfinite(impurity).all():
        raise ModelStructureError(f"{where} node {_first(~np.isfinite(impurity))}: impurity")
    if "missing_go_to_left" in nodes.dtype.names:
        flags = np.asarray(nodes["missing_go_to_left"], dtype=np.int64)
        if ((flags != 0) & (flags != 1)).any():
            raise ModelStructureError(f"{where}: missing_go_to_left holds values other than 0/1")
    # CompiledForest walks max_depth levels: fewer than the real depth would stop early.
    depth = _depth(left, right, inner)
    max_depth = _int(state.get("max_depth"), f"{where} max_depth")
    if not depth <= max_depth <= n:
        raise ModelStructureError(
            f"{where}: max_depth is {max_depth} but the tree is {depth} levels deep"
        )


def _depth(left: np.ndarray, right: np.ndarray, inner: np.ndarray) -> int:
    depth, frontier = 0, np.zeros(1, dtype=np.int64)
    while True:
        split = frontier[inner[frontier]]
        if not split.size:
            return depth
        frontier = np.concatenate((left[split], right[split]))
        depth += 1


class CheckedTree(Tree):  # type: ignore[misc]
    """scikit-learn's `Tree`, built from a pickle only after its arguments and state pass."""

    def __new__(cls, n_features: Any, n_classes: Any, n_outputs: Any) -> CheckedTree:
        _check_tree_args(n_features, n_classes, n_outputs)
        return super().__new__(cls, n_features, n_classes, n_outputs)  # type: ignore[no-any-return]

    def __setstate__(self, state: Any) -> None:
        seen = _trees_set.get()
        where = "tree"
        if seen is not None:
            where = f"tree {seen[0]}"
            seen[0] += 1
        check_tree_state(self, state, where)
        super().__setstate__(state)
        self.checked = True


def check_forest(forest: Any) -> None:
    """Every tree of a RandomForest was checked, is not empty and fits the forest.

    A tree whose state was never set (no nodes) would be walked from a null
    pointer; trees must read exactly the forest's features and classes.
    """
    n_features = _int(getattr(forest, "n_features_in_", None), "the forest's n_features_in_")
    n_classes = len(getattr(forest, "classes_", ()))
    estimators = getattr(forest, "estimators_", None)
    if not isinstance(estimators, list) or not estimators:
        raise ModelStructureError("the forest has no trees (estimators_)")
    for index, estimator in enumerate(estimators):
        tree = getattr(estimator, "tree_", None)
        if not isinstance(tree, CheckedTree) or not getattr(tree, "checked", False):
            raise ModelStructureError(f"tree {index}: missing or never filled with nodes")
        if tree.n_features != n_features:
            raise ModelStructureError(
                f"tree {index} reads {tree.n_features} features, the forest {n_features}"
            )
        if tree.n_outputs != 1 or int(tree.n_classes[0]) != n_classes:
            raise ModelStructureError(
                f"tree {index} has {tree.n_outputs} outputs and {tree.n_classes.tolist()} "
                f"classes, the forest 1 output and {n_classes} classes"
            )


# --------------------------------------------------------------------------- XGBoost


def _array(tree: Mapping[str, Any], key: str, where: str, n: int | None) -> np.ndarray:
    value = tree.get(key)
    if value is None:
        raise ModelStructureError(f"{where}: {key} is missing")
    try:
        array = np.asarray(value, dtype=np.float64 if key in _FLOAT_KEYS else np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ModelStructureError(f"{where}: {key} is not a list of numbers") from None
    if array.ndim != 1 or (n is not None and len(array) != n):
        raise ModelStructureError(
            f"{where}: {key} holds {array.size} values, expected {n} (num_nodes)"
        )
    return array


_FLOAT_KEYS: Final = frozenset({"split_conditions", "base_weights", "loss_changes", "sum_hessian"})


def _check_xgb_tree(tree: Any, where: str, num_feature: int) -> None:
    if not isinstance(tree, Mapping) or not isinstance(tree.get("tree_param"), Mapping):
        raise ModelStructureError(f"{where}: not a tree object with tree_param")
    param = tree["tree_param"]
    n = _in_range(_int_text(param.get("num_nodes"), f"{where} num_nodes"), 1, 1 << 31, where)
    leaf_vector = _int_text(param.get("size_leaf_vector", "1"), f"{where} size_leaf_vector")
    if leaf_vector not in (0, 1):
        raise ModelStructureError(f"{where}: multi-target trees are not supported")
    left = _array(tree, "left_children", where, n)
    right = _array(tree, "right_children", where, n)
    split_index = _array(tree, "split_indices", where, n)
    condition = _array(tree, "split_conditions", where, n)
    inner, reached = _topology(where, left, right)
    bad = inner & ((split_index < 0) | (split_index >= num_feature))
    if bad.any():
        i = _first(bad)
        raise ModelStructureError(
            f"{where} node {i}: split index {int(split_index[i])} is out of range "
            f"(the model has {num_feature} features)"
        )
    # Leaves keep their value in split_conditions: every reachable entry is used.
    bad = reached & ~np.isfinite(condition)
    if bad.any():
        i = _first(bad)
        raise ModelStructureError(f"{where} node {i}: split value {condition[i]} is not finite")
    for key in ("parents", "default_left", "split_type", "base_weights"):
        if key in tree:
            _array(tree, key, where, n)
    if "default_left" in tree:
        flags = _array(tree, "default_left", where, n)
        if ((flags != 0) & (flags != 1)).any():
            raise ModelStructureError(f"{where}: default_left holds values other than 0/1")
    if "split_type" in tree and (_array(tree, "split_type", where, n)[inner] != 0).any():
        raise ModelStructureError(f"{where}: categorical splits are not supported")
    if "base_weights" in tree and not np.isfinite(_array(tree, "base_weights", where, n)).all():
        raise ModelStructureError(f"{where}: base_weights are not finite")
    if "parents" in tree:
        parents = _array(tree, "parents", where, n)
        split = np.flatnonzero(inner)
        wrong = (parents[left[split]] != split) | (parents[right[split]] != split)
        if wrong.any():
            i = int(split[np.flatnonzero(wrong)[0]])
            raise ModelStructureError(f"{where} node {i}: its children name another parent")
    for key in ("categories", "categories_nodes", "categories_segments", "categories_sizes"):
        value = tree.get(key)
        if value is not None and len(value):
            raise ModelStructureError(f"{where}: categorical splits are not supported")


def _gbtree_model(booster: Mapping[str, Any]) -> Mapping[str, Any] | None:
    name = booster.get("name")
    if name == "gbtree":
        model = booster.get("model")
    elif name == "dart":
        inner = booster.get("gbtree")
        model = inner.get("model") if isinstance(inner, Mapping) else None
    elif name == "gblinear":
        return None
    else:
        raise ModelStructureError(f"booster type {name!r} is not supported")
    if not isinstance(model, Mapping):
        raise ModelStructureError(f"the {name} booster has no model")
    return model


def check_booster_document(doc: Any) -> None:
    """Check a parsed XGBoost model: a saved model, or the pickled Config + Model pair."""
    if isinstance(doc, Mapping) and "Model" in doc:
        doc = doc["Model"]
    learner = doc.get("learner") if isinstance(doc, Mapping) else None
    if not isinstance(learner, Mapping):
        raise ModelStructureError("the XGBoost model has no learner")
    params = learner.get("learner_model_param")
    if not isinstance(params, Mapping):
        raise ModelStructureError("the XGBoost model has no learner_model_param")
    num_feature = _in_range(
        _int_text(params.get("num_feature"), "num_feature"), 1, _MAX_FEATURES, "num_feature"
    )
    num_class = _in_range(
        _int_text(params.get("num_class", "0"), "num_class"), 0, _MAX_CLASSES, "num_class"
    )
    names = learner.get("feature_names") or []
    if names and len(names) != num_feature:
        raise ModelStructureError(f"{len(names)} feature names for num_feature {num_feature}")
    base_score = str(params.get("base_score", "0")).strip("[]")
    for part in base_score.split(","):
        try:
            finite = math.isfinite(float(part))
        except ValueError:
            finite = False
        if not finite:
            raise ModelStructureError(f"base_score {base_score[:40]!r} is not a finite number")
    booster = learner.get("gradient_booster")
    if not isinstance(booster, Mapping):
        raise ModelStructureError("the XGBoost model has no gradient_booster")
    model = _gbtree_model(booster)
    if model is None:  # gblinear: one weight per feature (and bias) per output group
        weights = _array(booster.get("model") or {}, "weights", "gblinear", None)
        if not weights.size or weights.size % (num_feature + 1) or not np.isfinite(weights).all():
            raise ModelStructureError("gblinear weights do not match num_feature or are not finite")
        return
    declared = _int_text(
        (model.get("gbtree_model_param") or {}).get("num_trees"), "gbtree num_trees"
    )
    trees = model.get("trees")
    if not isinstance(trees, list) or len(trees) != declared:
        held = len(trees) if isinstance(trees, list) else 0
        raise ModelStructureError(f"the booster declares {declared} trees but holds {held}")
    tree_info = _array(model, "tree_info", "the booster", declared)
    groups = max(num_class, 1)
    if declared and ((tree_info < 0) | (tree_info >= groups)).any():
        raise ModelStructureError(f"tree_info names an output group outside 0..{groups - 1}")
    if "iteration_indptr" in model:
        indptr = _array(model, "iteration_indptr", "the booster", None)
        if indptr.size and (
            indptr[0] != 0 or indptr[-1] != declared or (np.diff(indptr) < 0).any()
        ):
            raise ModelStructureError("iteration_indptr does not partition the trees")
    cats = model.get("cats")
    if isinstance(cats, Mapping) and any(len(v) for v in cats.values() if hasattr(v, "__len__")):
        raise ModelStructureError("categorical features are not supported")
    if booster.get("name") == "dart":
        drops = _array(booster, "weight_drop", "dart", declared)
        if not np.isfinite(drops).all():
            raise ModelStructureError("dart weight_drop is not finite")
    for index, tree in enumerate(trees):
        _check_xgb_tree(tree, f"tree {index}", num_feature)


def check_booster_bytes(data: bytes | bytearray) -> None:
    """Parse XGBoost JSON or UBJSON bytes and check the model they hold."""
    text = bytes(data).lstrip()
    if text[:1] != b"{":
        raise ModelStructureError("the XGBoost model is neither JSON nor UBJSON")
    if text[1:].lstrip()[:1] == b'"':
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ModelStructureError(f"the XGBoost JSON is unreadable ({exc})") from None
    else:
        doc = _UbjReader(bytes(data)).document()
    check_booster_document(doc)


class CheckedBooster(Booster):
    """XGBoost's `Booster`, deserialized from a pickle only after its model passes."""

    def __setstate__(self, state: Any) -> None:
        handle = state.get("handle") if isinstance(state, dict) else None
        if handle is not None:
            if not isinstance(handle, bytes | bytearray):
                raise ModelStructureError("the pickled booster holds no model bytes")
            check_booster_bytes(handle)
        super().__setstate__(state)


# Classes a model pickle gets instead of the ones it names (see storage.model_files.safe_unpickle).
CHECKED_CLASSES: Final[dict[type, type]] = {Tree: CheckedTree, Booster: CheckedBooster}


# --------------------------------------------------------------------------- UBJSON


class _UbjReader:
    """The UBJSON subset XGBoost writes (big-endian numbers, typed arrays), bounds-checked.

    Written here because XGBoost's own reader is native code, the one thing
    this module keeps away from unchecked bytes. Typed arrays become NumPy
    arrays without a copy per element.
    """

    _SCALARS: Final = {
        b"i": ">i1",
        b"U": ">u1",
        b"I": ">i2",
        b"l": ">i4",
        b"L": ">i8",
        b"d": ">f4",
        b"D": ">f8",
    }

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def document(self) -> Any:
        try:
            value = self._value(self._take(1), 0)
        except (struct.error, IndexError, UnicodeDecodeError, ValueError) as exc:
            if isinstance(exc, ModelStructureError):
                raise
            raise ModelStructureError(f"the XGBoost UBJSON is unreadable ({exc})") from None
        return value

    def _take(self, size: int) -> bytes:
        end = self._pos + size
        if size < 0 or end > len(self._data):
            raise ModelStructureError(
                f"the XGBoost UBJSON is cut off (needs {size} bytes at offset {self._pos})"
            )
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def _number(self, marker: bytes) -> Any:
        dtype = self._SCALARS.get(marker)
        if dtype is None:
            raise ModelStructureError(f"unexpected UBJSON marker {marker!r} at {self._pos - 1}")
        size = np.dtype(dtype).itemsize
        return np.frombuffer(self._take(size), dtype=dtype)[0].item()

    def _length(self) -> int:
        length = self._number(self._take(1))
        if not isinstance(length, int) or length < 0:
            raise ModelStructureError(f"a UBJSON length is {length!r}")
        return length

    def _string(self) -> str:
        return self._take(self._length()).decode("utf-8")

    def _value(self, marker: bytes, depth: int) -> Any:
        if depth > _MAX_NESTING:
            raise ModelStructureError("the XGBoost UBJSON is nested too deeply")
        if marker == b"{":
            return self._object(depth)
        if marker == b"[":
            return self._array(depth)
        if marker == b"S" or marker == b"H":
            return self._string()
        if marker == b"C":
            return self._take(1).decode("latin-1")
        if marker == b"T":
            return True
        if marker == b"F":
            return False
        if marker == b"Z":
            return None
        return self._number(marker)

    def _object(self, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while True:
            marker = self._take(1)
            if marker == b"}":
                return result
            self._pos -= 1
            key = self._string()
            result[key] = self._value(self._take(1), depth + 1)

    def _array(self, depth: int) -> Any:
        marker = self._take(1)
        if marker == b"$":
            element = self._take(1)
            if self._take(1) != b"#":
                raise ModelStructureError("a typed UBJSON array without a count")
            count = self._length()
            dtype = self._SCALARS.get(element)
            if dtype is None:
                raise ModelStructureError(f"typed UBJSON array of {element!r} is not supported")
            size = np.dtype(dtype).itemsize
            if count * size > len(self._data) - self._pos:
                raise ModelStructureError(f"a UBJSON array claims {count} values past the end")
            return np.frombuffer(self._take(count * size), dtype=dtype).astype(
                np.float64 if element in (b"d", b"D") else np.int64
            )
        if marker == b"#":
            count = self._length()
            if count > len(self._data) - self._pos:
                raise ModelStructureError(f"a UBJSON array claims {count} values past the end")
            return [self._value(self._take(1), depth + 1) for _ in range(count)]
        items: list[Any] = []
        while marker != b"]":
            items.append(self._value(marker, depth + 1))
            marker = self._take(1)
        return items
