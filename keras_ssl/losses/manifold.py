"""Manifold-capacity losses: MMCR's nuclear norms of view centroids (Yerxa et al. 2023)."""

from keras import ops

from keras_ssl.losses.common import _check_rank, l2_normalize


def nuclear_norm(x):
    """Sum of the singular values of the last two axes of `x`, in float32.

    `ops.svd(..., compute_uv=False)` differentiates on all three backends
    (its gradient is `U V^T`, defined for distinct or repeated non-zero
    singular values), so no eigen-decomposition of a Gram matrix, whose
    square root has an infinite gradient at rank deficiency, is needed.

    Args:
        x: `(..., M, N)` tensor.

    Returns:
        `(...)` float32 tensor.

    Example:
        >>> from keras_ssl.losses.manifold import nuclear_norm
        >>> float(nuclear_norm(np.array([[3.0, 0.0], [0.0, -4.0]])))   # singular values 3 and 4
        7.0
    """
    return ops.sum(ops.svd(ops.cast(x, "float32"), compute_uv=False), axis=-1)


def mmcr(z, lmbda=0.0, z_momentum=None):
    """MMCR's loss: minus the nuclear norm of the matrix of view centroids.

    Each view's projection is L2-normalised; an image's centroid is the
    mean of its `K` views, and the loss is `lmbda * mean_b ||Z_b||_* -
    ||C||_*`, with `C` the `(B, D)` centroids and `Z_b` the `(K, D)` views
    of image `b` (the official `MMCR_Loss`; `lmbda` is 0 in the paper).
    Maximising `||C||_*` spreads the centroids over many directions while
    pulling each image's views together (a centroid of spread views is short).

    With `z_momentum` (the official `MMCR_Momentum_Loss`, its ImageNet runs),
    the centroid is the mean of the online centroid and the momentum
    network's centroid of the same views, `(mean_k z_bk + mean_k m_bk) / 2`;
    no gradient reaches the momentum views, and `||Z_b||_*` stays the
    online views' own.

    Args:
        z: `(B, K, D)` projections, `K >= 1` views of each of `B` images.
        lmbda: weight of the mean per-image nuclear norm (>= 0; paper: 0).
        z_momentum: None, or the momentum network's `(B, K, D)` projections
            of the same views.

    Returns:
        Scalar float32 loss, in `[-min(B, D), lmbda * min(K, D)]`.

    Example:
        >>> from keras_ssl.losses.manifold import mmcr
        >>> z = np.zeros((2, 3, 2)); z[0, :, 0] = 1.0; z[1, :, 1] = 1.0   # two images, orthogonal views
        >>> float(mmcr(z))   # the centroids e1, e2: nuclear norm 2
        -2.0
        >>> round(float(mmcr(z, lmbda=1.0)), 4)   # each image's 3 equal views: one singular value sqrt(3)
        -0.2679
        >>> round(float(mmcr(z, z_momentum=z[::-1])), 4)   # both centroids (e1 + e2) / 2: rank 1, norm 1
        -1.0
    """
    if not lmbda >= 0:
        raise ValueError(f"`lmbda` must be >= 0, got {lmbda}.")
    _check_rank("z", z, 3)
    z = l2_normalize(z)
    centroids = ops.mean(z, axis=1)
    if z_momentum is not None:
        # Static shapes only: a traced batch dimension is None.
        shape, shape_m = tuple(z.shape), tuple(z_momentum.shape)
        if len(shape) != len(shape_m) or any(
            a is not None and b is not None and a != b for a, b in zip(shape, shape_m)
        ):
            raise ValueError(f"`z_momentum` must have the shape of `z`, {shape}; got {shape_m}.")
        # The momentum network is a target: as the official frozen copy, it takes no gradient.
        momentum_centroids = ops.mean(ops.stop_gradient(l2_normalize(z_momentum)), axis=1)
        centroids = 0.5 * (centroids + momentum_centroids)
    loss = -nuclear_norm(centroids)
    if lmbda:
        loss = loss + lmbda * ops.mean(nuclear_norm(z))
    return loss
