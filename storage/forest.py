"""RandomForest inference over all trees at once, with NumPy, for small batches.

scikit-learn's `predict_proba` walks the forest one tree at a time with Python
overhead per tree: ~15 ms for a handful of rows and 100 trees, the largest
single cost of a predictor batch in the benchmark profile. Here every tree's
nodes sit in padded arrays and all trees advance one level per step, so a batch
costs about max_depth vectorised steps. The comparison is exactly
scikit-learn's (the input as float32, against the float64 threshold, `<=` goes
left), and `load_model` checks the result against scikit-learn on probe rows
before using it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Padded node arrays larger than this (trees x nodes) are left to scikit-learn.
MAX_CELLS = 20_000_000


@dataclass(frozen=True, slots=True)
class CompiledForest:
    left: np.ndarray  # [trees, nodes] child index, the node itself for leaves
    right: np.ndarray
    feature: np.ndarray  # [trees, nodes], 0 for leaves (never used)
    threshold: np.ndarray  # [trees, nodes] float64
    proba: np.ndarray  # [trees, nodes, classes] leaf class distributions (rows sum to 1)
    depth: int

    @classmethod
    def from_estimator(cls, forest: Any) -> CompiledForest | None:
        """None when the forest is not a plain two-class, single-output classifier."""
        trees = [e.tree_ for e in getattr(forest, "estimators_", [])]
        if not trees or any(t.n_outputs != 1 or t.value.shape[2] != 2 for t in trees):
            return None
        nodes = max(t.node_count for t in trees)
        if len(trees) * nodes > MAX_CELLS:
            return None
        shape = (len(trees), nodes)
        own = np.broadcast_to(np.arange(nodes), shape).copy()
        left, right = own.copy(), own.copy()
        feature = np.zeros(shape, dtype=np.intp)
        threshold = np.zeros(shape, dtype=np.float64)
        proba = np.zeros((*shape, 2), dtype=np.float64)
        for i, t in enumerate(trees):
            n = t.node_count
            inner = t.children_left[:n] != -1
            left[i, :n] = np.where(inner, t.children_left[:n], np.arange(n))
            right[i, :n] = np.where(inner, t.children_right[:n], np.arange(n))
            feature[i, :n] = np.where(inner, t.feature[:n], 0)
            threshold[i, :n] = t.threshold[:n]
            value = np.asarray(t.value[:n, 0, :], dtype=np.float64)
            total = value.sum(axis=1, keepdims=True)
            total[total == 0] = 1.0
            proba[i, :n] = value / total
        depth = max(int(t.max_depth) for t in trees)
        return cls(left, right, feature, threshold, proba, depth)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Mean of the trees' leaf distributions, shape (n, 2). X must hold no NaN."""
        # scikit-learn feeds trees float32: compare the same rounded values.
        x = np.asarray(X, dtype=np.float32).astype(np.float64)
        n_trees = self.left.shape[0]
        rows = np.arange(x.shape[0])[None, :]
        trees = np.arange(n_trees)[:, None]
        node = np.zeros((n_trees, x.shape[0]), dtype=np.intp)
        for _ in range(self.depth):
            values = x[rows, self.feature[trees, node]]
            go_left = values <= self.threshold[trees, node]
            node = np.where(go_left, self.left[trees, node], self.right[trees, node])
        return np.asarray(self.proba[trees, node].sum(axis=0) / n_trees)
