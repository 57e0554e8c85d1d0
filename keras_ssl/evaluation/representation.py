"""Representation metrics: embedding std (collapse), RankMe, alignment and uniformity, retrieval recall."""

import numpy as np

from keras_ssl.evaluation.common import _matrix, _normalize


# ------------------------------------------------------------- metrics
def embedding_std(z):
    """Mean over dimensions of the batch std of L2-normalised `z`.

    About `1/sqrt(D)` for healthy embeddings, 0 when collapsed to a point.

    Args:
        z: `(N, D)` embeddings.

    Returns:
        float.

    Example:
        >>> from keras_ssl.evaluation import embedding_std
        >>> rng = np.random.default_rng(0)
        >>> round(embedding_std(rng.normal(size=(1000, 64))), 3)  # 1 / sqrt(64)
        0.125
        >>> embedding_std(np.ones((1000, 64)))  # collapsed
        0.0
    """
    return float(_normalize(_matrix(z, "z")).std(axis=0).mean())


def rankme(z, eps=1e-7):
    """RankMe effective rank (Garrido et al., 2023).

    `exp(entropy(p))` with `p_k = s_k / sum(s) + eps`, `s` the singular
    values of `z`: 1 for collapsed (rank-1) embeddings, up to `min(N, D)`.

    Args:
        z: `(N, D)` embeddings (not centred, as in the paper).
        eps: keeps the logarithm finite.

    Returns:
        float.

    Example:
        >>> from keras_ssl.evaluation import rankme
        >>> rng = np.random.default_rng(0)
        >>> round(rankme(rng.normal(size=(2000, 16))), 1)  # nearly the full 16
        16.0
        >>> round(rankme(np.outer(rng.normal(size=2000), rng.normal(size=16))), 1)  # rank 1
        1.0
    """
    s = np.linalg.svd(_matrix(z, "z"), compute_uv=False)
    p = s / max(s.sum(), np.finfo("float64").tiny) + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def alignment(z1, z2, alpha=2):
    """Alignment (Wang & Isola, 2020): mean `||f(x) - f(y)||^alpha` over positive pairs.

    Args:
        z1, z2: `(N, D)` embeddings of the two views of each image
            (L2-normalised here).
        alpha: the exponent.

    Returns:
        float, 0 for perfectly aligned pairs, at most `2^alpha`.

    Example:
        >>> from keras_ssl.evaluation import alignment, embed
        >>> view1, view2 = images, images[:, :, ::-1]  # two views: the images and their mirror images
        >>> a = alignment(embed(encoder, view1), embed(encoder, view2))
        >>> 0.0 <= a <= 4.0
        True
        >>> z = np.random.default_rng(0).normal(size=(100, 8))
        >>> round(alignment(z, z), 6), round(alignment(z, -z), 6)  # the two extremes
        (0.0, 4.0)
    """
    z1, z2 = _normalize(_matrix(z1, "z1")), _normalize(_matrix(z2, "z2"))
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {z1.shape} and {z2.shape}.")
    return float((np.linalg.norm(z1 - z2, axis=1) ** alpha).mean())


def uniformity(z, t=2, batch_size=1024):
    """Uniformity (Wang & Isola, 2020): `log mean_{i<j} exp(-t ||z_i - z_j||^2)`.

    Args:
        z: `(N, D)` embeddings, N >= 2 (L2-normalised here). Cost O(N^2):
            subsample large sets.
        t: the kernel's scale.
        batch_size: rows per chunk.

    Returns:
        float: 0 when all points coincide, more negative when spread out.

    Example:
        >>> from keras_ssl.evaluation import uniformity
        >>> rng = np.random.default_rng(0)
        >>> round(uniformity(rng.normal(size=(500, 32))), 2)
        -3.75
        >>> uniformity(np.ones((500, 32)))  # collapsed
        0.0
    """
    z = _normalize(_matrix(z, "z"))
    n = len(z)
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 embeddings, got {n}.")
    # A running log-sum-exp keeps memory at batch_size * N, not N^2 / 2.
    total = -np.inf
    for start in range(0, n - 1, batch_size):
        rows = z[start : start + batch_size]
        sq = np.maximum(2.0 - 2.0 * rows @ z.T, 0.0)  # unit vectors: |a-b|^2 = 2 - 2ab
        upper = np.arange(n)[None, :] > np.arange(start, start + len(rows))[:, None]
        logits = -t * sq[upper]
        top = logits.max()
        total = np.logaddexp(total, top + np.log(np.sum(np.exp(logits - top))))
    return float(total - np.log(n * (n - 1) / 2))


# ------------------------------------------------------------- helpers
def recall_at_k(image_embeddings, text_embeddings, ks=(1, 5), labels=None):
    """Retrieval recall@k both ways for paired rows of two embedding arrays.

    Args:
        image_embeddings, text_embeddings: `(N, D)` NumPy arrays, row `i` pairs.
        ks: the `k`s.
        labels: optional `(N,)`: a hit is any retrieved row with the query's label.

    Returns:
        dict `{"image_to_text@k": r, "text_to_image@k": r}`.

    Example:
        >>> from keras_ssl.evaluation import recall_at_k
        >>> e = np.eye(4)
        >>> recall_at_k(e, e, ks=(1,))
        {'image_to_text@1': 1.0, 'text_to_image@1': 1.0}
    """
    a = _matrix(image_embeddings, "image_embeddings", "float32")
    b = _matrix(text_embeddings, "text_embeddings", "float32")
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings must have one shape (N, D), got {a.shape} and {b.shape}.")
    a, b = _normalize(a), _normalize(b)
    key = np.arange(len(a)) if labels is None else np.asarray(labels).reshape(-1)
    sim = a @ b.T
    result = {}
    for name, s in (("image_to_text", sim), ("text_to_image", sim.T)):
        # stable sort: ties rank the lower index first
        ranked = np.argsort(-s, axis=1, kind="stable")
        for k in ks:
            hits = key[ranked[:, :k]] == key[:, None]
            result[f"{name}@{k}"] = float(hits.any(axis=1).mean())
    return result
