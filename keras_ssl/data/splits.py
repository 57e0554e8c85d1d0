"""Deterministic, class-stratified splits of labelled items (arrays, files)."""

import numpy as np


def split(x, y, test_fraction, seed):
    """`(x_train, y_train), (x_test, y_test)`: a deterministic split, stratified when labels exist.

    Example:
        >>> (x_a, y_a), (x_b, y_b) = keras_ssl.data.split(x_train, y_train, 0.25, seed=0)
        >>> len(x_a), len(x_b), np.bincount(y_b).tolist()
        (48, 16, [4, 4, 4, 4])
    """
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    test = test_mask(len(x), y, test_fraction, seed)
    if y is None:
        return (x[~test], None), (x[test], None)
    return (x[~test], y[~test]), (x[test], y[test])


def test_mask(count, labels, fraction, seed):
    """Boolean mask of a test split: `fraction` of each class (of all items without labels).

    Example:
        >>> mask = keras_ssl.data.test_mask(10, None, 0.3, seed=0)
        >>> mask.shape, int(mask.sum())
        ((10,), 3)
    """
    test = np.zeros(count, bool)
    test[pick_per_class(np.zeros(count, "int64") if labels is None else labels, fraction, seed)] = True
    return test


def pick_per_class(labels, fraction, seed, minimum=0):
    """Sorted indices of `round(fraction * n_c)` (at least `minimum`) random items per class.

    Args:
        labels: integer labels `(N,)`.
        fraction: share of each class to pick.
        seed: NumPy seed.
        minimum: least items picked per class.

    Example:
        >>> keep = keras_ssl.data.pick_per_class(y_train, 0.1, seed=0)   # a class-balanced 10 %
        >>> len(keep), np.bincount(y_train[keep]).tolist()
        (8, [2, 2, 2, 2])
    """
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        count = min(len(members), max(minimum, int(round(fraction * len(members)))))
        picked.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(picked))
