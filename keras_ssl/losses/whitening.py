"""Whitening losses: W-MSE's Cholesky whitening of sub-batches (Ermolov et al. 2021)."""

from keras import ops

from keras_ssl.losses.common import _check_rank, l2_normalize


def cholesky_whiten(z, eps=0.0):
    """Whitens the rows of each `(N, D)` matrix with the inverse Cholesky factor of its covariance.

    The rows are centred and multiplied by `W^T`, `W = L^{-1}` with `L L^T`
    the shrunk covariance `(1 - eps) * cov + eps * I` (`cov` unbiased), as
    the official `Whitening2d`; the output's covariance is the identity
    (for `eps = 0`). Gradients flow through the mean and the factor, as in
    the paper.

    `L` is `R^T` from a QR factorisation of the scaled centred rows (stacked
    on `sqrt(eps) I`), the same factor as the Cholesky one of the covariance
    once the signs of `R`'s diagonal are made positive, without forming the
    covariance: its float32 error grows with the condition number of the
    rows, not with its square (about 100 times smaller for an
    ill-conditioned sub-batch, measured against float64), and a singular
    sub-batch gives non-finite values instead of the exception that
    `ops.cholesky` raises on TensorFlow and PyTorch.

    Args:
        z: `(..., N, D)` tensor; each `(N, D)` matrix is whitened on its own.
        eps: shrinkage toward the identity, in [0, 1] (official default 0,
            which needs `N > D` and a full-rank sub-batch).

    Returns:
        float32 tensor of the shape of `z`.

    Example:
        >>> from keras_ssl.losses.whitening import cholesky_whiten
        >>> mix = np.array([[2.0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 3, 0], [0, 0, 1, 1]])
        >>> w = ops.convert_to_numpy(cholesky_whiten(np.random.default_rng(0).normal(size=(32, 4)) @ mix))
        >>> np.round(np.cov(w, rowvar=False), 4).tolist() == np.eye(4).tolist()
        True
    """
    if not 0 <= eps <= 1:
        raise ValueError(f"`eps` must be in [0, 1], got {eps}.")
    z = ops.cast(z, "float32")
    n, d = ops.shape(z)[-2], ops.shape(z)[-1]
    centred = z - ops.mean(z, axis=-2, keepdims=True)
    rows = centred * ((1.0 - eps) / (n - 1)) ** 0.5  # rows^T rows = (1 - eps) cov
    if eps:
        shrink = ops.broadcast_to(ops.eye(d, dtype="float32") * eps**0.5, tuple(ops.shape(z)[:-2]) + (d, d))
        rows = ops.concatenate([rows, shrink], axis=-2)
    _, r = ops.qr(rows, mode="reduced")
    r = r * ops.sign(ops.expand_dims(ops.diagonal(r, axis1=-2, axis2=-1), -1))  # R^T is then L
    # W z_c^T = L^{-1} z_c^T, a triangular solve rather than an explicit inverse.
    solved = ops.solve_triangular(ops.swapaxes(r, -1, -2), ops.swapaxes(centred, -1, -2), lower=True)
    return ops.swapaxes(solved, -1, -2)


def wmse(views, w_size, permutations=None, eps=0.0):
    """W-MSE's loss: `2 - 2 cos` between whitened views, averaged over pairs and iterations.

    For each row order in `permutations` (the official `w_iter` random
    orders), the batch is cut into sub-batches of `w_size` rows, each view's
    sub-batch is whitened on its own (`cholesky_whiten`), and the loss is
    the mean over rows of `2 - 2 cos(w_i, w_j)` for every pair of views
    `i < j`, averaged over pairs and orders (the official `W_MSE.forward`).

    Args:
        views: list of `K >= 2` projections `(B, D)`, row `b` of each from image `b`.
        w_size: rows per sub-batch; divides `B` and exceeds `D` when `eps = 0`.
        permutations: `(w_iter, B)` integer row orders; None: one pass in
            the given order.
        eps: covariance shrinkage of `cholesky_whiten`.

    Returns:
        Scalar float32 loss in `[0, 4]`.

    Example:
        >>> from keras_ssl.losses.whitening import wmse
        >>> rng = np.random.default_rng(0)
        >>> z = rng.normal(size=(256, 4))
        >>> float(wmse([z, 3 * z + 1], w_size=64)) < 1e-5   # whitening removes the affine map
        True
        >>> abs(float(wmse([z, rng.normal(size=(256, 4))], w_size=64)) - 2.0) < 0.3   # unrelated views: about 2
        True
    """
    if len(views) < 2:
        raise ValueError(f"W-MSE needs at least 2 views, got {len(views)}.")
    for i, view in enumerate(views):
        _check_rank(f"views[{i}]", view, 2)
    batch, dim = ops.shape(views[0])
    w_size = int(w_size)
    if isinstance(batch, int) and (w_size < 2 or batch % w_size):
        raise ValueError(f"`w_size` must be >= 2 and divide the batch size {batch}, got {w_size}.")
    if permutations is None:
        permutations = ops.expand_dims(ops.arange(batch), 0)
    permutations = ops.convert_to_tensor(permutations, "int32")
    iterations = ops.shape(permutations)[0]
    total = 0.0
    for it in range(iterations):
        whitened = []
        for view in views:
            shuffled = ops.take(ops.cast(view, "float32"), permutations[it], axis=0)
            blocks = cholesky_whiten(ops.reshape(shuffled, (-1, w_size, dim)), eps)
            whitened.append(l2_normalize(ops.reshape(blocks, (-1, dim))))
        for i in range(len(views)):
            for j in range(i + 1, len(views)):
                total = total + ops.mean(2.0 - 2.0 * ops.sum(whitened[i] * whitened[j], axis=-1))
    pairs = len(views) * (len(views) - 1) // 2
    return total / (iterations * pairs)
