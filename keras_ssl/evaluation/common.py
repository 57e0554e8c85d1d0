"""Array helpers the protocols share."""

import keras
import numpy as np


def _numpy(x):
    return np.asarray(x) if isinstance(x, (np.ndarray, list, tuple)) else keras.ops.convert_to_numpy(x)


def _matrix(z, name, dtype="float64"):
    z = np.asarray(_numpy(z), dtype)
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"`{name}` must be a non-empty (N, D) array, got shape {z.shape}.")
    return z


def _normalize(z):
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12).astype(z.dtype)


def _labels(y, n):
    y = np.asarray(_numpy(y)).reshape(-1)
    if y.dtype.kind not in "ui" or (y.size and y.min() < 0):
        raise ValueError(f"labels must be non-negative integers, got dtype {y.dtype}.")
    if n is not None and len(y) != n:
        raise ValueError(f"got {len(y)} labels for {n} images/features.")
    return y.astype("int64")


def _accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def _top_accuracies(scores, labels, top):
    order = np.argsort(-scores, axis=1, kind="stable")
    return {f"top{n}": float(np.mean((order[:, :n] == labels[:, None]).any(axis=1))) for n in top}
