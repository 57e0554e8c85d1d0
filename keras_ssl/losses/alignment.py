"""Losses without negatives: negative cosine (SimSiam, BYOL), Barlow Twins, VICReg."""

from keras import ops

from keras_ssl.losses.common import _check_batch, l2_normalize


def _cosine(p, z):
    """Row-wise cosine of `p` with `stop_gradient(z)`, float32."""
    z = ops.stop_gradient(ops.cast(z, "float32"))
    return ops.sum(l2_normalize(p) * l2_normalize(z), axis=-1)


def negative_cosine(p, z):
    """SimSiam's loss: minus the mean cosine of `p` with `stop_gradient(z)`.

    Args:
        p: `(B, D)` predictions (receive the gradient).
        z: `(B, D)` targets (no gradient flows into them).

    Returns:
        Scalar float32 loss in `[-1, 1]`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> p, z = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> round(float(keras_ssl.losses.negative_cosine(p, p)), 4)   # same direction
        -1.0
        >>> round(float(keras_ssl.losses.negative_cosine(p, -p)), 4)   # opposite
        1.0
        >>> round(float(keras_ssl.losses.negative_cosine(p, z)), 3)   # unrelated vectors: about 0
        -0.007
    """
    return -ops.mean(_cosine(p, z))


def byol_loss(p, z):
    """BYOL's loss: the mean of `2 - 2 cos(p, stop_gradient(z))`.

    Equal to the squared distance of the L2-normalised vectors.

    Args:
        p: `(B, D)` online predictions.
        z: `(B, D)` target projections (no gradient).

    Returns:
        Scalar float32 loss in `[0, 4]`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> p, z = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> bool(keras_ssl.losses.byol_loss(p, 2 * p) < 1e-6)   # same direction: 0
        True
        >>> round(float(keras_ssl.losses.byol_loss(p, -p)), 4)   # opposite: 4
        4.0
        >>> round(float(keras_ssl.losses.byol_loss(p, z)), 3)   # unrelated vectors: about 2
        1.986
    """
    return ops.mean(2.0 - 2.0 * _cosine(p, z))


def _standardize(z, eps):
    """Batch standardisation, biased variance (BatchNorm without affine)."""
    mean = ops.mean(z, axis=0, keepdims=True)
    var = ops.mean(ops.square(z - mean), axis=0, keepdims=True)
    return (z - mean) * ops.rsqrt(var + eps)


def _off_diagonal(matrix):
    """`matrix` with its diagonal set to 0 (square matrices)."""
    return matrix * (1.0 - ops.eye(ops.shape(matrix)[0], dtype="float32"))


def barlow_twins_terms(z1, z2, lambd=5e-3, eps=1e-5):
    """The two terms of the Barlow Twins loss.

    Each view is standardised over the batch separately (mean 0, std 1, biased
    variance, as the reference's BatchNorm without affine), then
    `c = z1n.T @ z2n / B` is the `(D, D)` cross-correlation.

    Args:
        z1: `(B, D)` embeddings of the first views.
        z2: `(B, D)` embeddings of the second views.
        lambd: weight of the off-diagonal (redundancy reduction) term.
        eps: added to the variance before the square root.

    Returns:
        Dict of scalars: `on_diagonal = sum_i (1 - c_ii)^2` and
        `off_diagonal = lambd * sum_{i != j} c_ij^2`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> terms = keras_ssl.losses.barlow_twins_terms(z1, z2)
        >>> {name: round(float(value), 3) for name, value in terms.items()}
        {'on_diagonal': 18.317, 'off_diagonal': 0.157}
        >>> round(float(keras_ssl.losses.barlow_twins_terms(z1, z1)["on_diagonal"]), 3)   # equal views
        0.0
    """
    _check_batch(z1)
    z1 = _standardize(ops.cast(z1, "float32"), eps)
    z2 = _standardize(ops.cast(z2, "float32"), eps)
    c = ops.matmul(ops.transpose(z1), z2) / ops.cast(ops.shape(z1)[0], "float32")
    return {
        "on_diagonal": ops.sum(ops.square(ops.diagonal(c) - 1.0)),
        "off_diagonal": lambd * ops.sum(ops.square(_off_diagonal(c))),
    }


def barlow_twins(z1, z2, lambd=5e-3, scale=1.0):
    """Barlow Twins loss: `scale * (on_diagonal + off_diagonal)`.

    Args:
        z1: `(B, D)` embeddings of the first views.
        z2: `(B, D)` embeddings of the second views.
        lambd: weight of the off-diagonal term.
        scale: overall factor (the reference code's loss scale).

    Returns:
        Scalar float32 loss.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> round(float(keras_ssl.losses.barlow_twins(z1, z2)), 3)   # on_diagonal + off_diagonal
        18.474
    """
    terms = barlow_twins_terms(z1, z2, lambd)
    return scale * (terms["on_diagonal"] + terms["off_diagonal"])


def _std_hinge(z, eps):
    """`mean(relu(1 - sqrt(var + eps)))` over dimensions, unbiased batch variance."""
    centred = z - ops.mean(z, axis=0, keepdims=True)
    var = ops.sum(ops.square(centred), axis=0) / (ops.cast(ops.shape(z)[0], "float32") - 1.0)
    return ops.mean(ops.relu(1.0 - ops.sqrt(var + eps)))


def vicreg_terms(z1, z2, eps=1e-4):
    """The three unweighted VICReg terms.

    Args:
        z1: `(B, D)` embeddings of the first views, `B >= 2`.
        z2: `(B, D)` embeddings of the second views.
        eps: added to the variance before the square root.

    Returns:
        Dict of scalars: `invariance` (mean squared error of the views),
        `variance` (mean over dimensions of `relu(1 - sqrt(var + eps))`,
        averaged over the two views) and `covariance` (sum of the squared
        off-diagonal covariances divided by `D`, summed over the two views).
        Variances and covariances are unbiased (divided by `B - 1`), as the
        paper's code.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> terms = keras_ssl.losses.vicreg_terms(z1, z2)
        >>> {name: round(float(value), 3) for name, value in terms.items()}
        {'invariance': 2.042, 'variance': 0.089, 'covariance': 4.698}
        >>> float(keras_ssl.losses.vicreg_terms(z1, z1)["invariance"])   # equal views
        0.0
    """
    _check_batch(z1)
    z1 = ops.cast(z1, "float32")
    z2 = ops.cast(z2, "float32")
    batch = ops.cast(ops.shape(z1)[0], "float32")
    dim = ops.cast(ops.shape(z1)[1], "float32")
    variance = 0.0
    covariance = 0.0
    for z in (z1, z2):
        variance += 0.5 * _std_hinge(z, eps)  # VIbCReg sums the two views' hinges
        z = z - ops.mean(z, axis=0, keepdims=True)
        cov = ops.matmul(ops.transpose(z), z) / (batch - 1.0)
        covariance += ops.sum(ops.square(_off_diagonal(cov))) / dim
    return {
        "invariance": ops.mean(ops.square(z1 - z2)),
        "variance": variance,
        "covariance": covariance,
    }


def vicreg(z1, z2, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=1e-4):
    """VICReg loss: the weighted sum of its three terms (`vicreg_terms`).

    Args:
        z1: `(B, D)` embeddings of the first views.
        z2: `(B, D)` embeddings of the second views.
        sim_coeff: weight of the invariance term.
        std_coeff: weight of the variance term.
        cov_coeff: weight of the covariance term.
        eps: added to the variance before the square root.

    Returns:
        Scalar float32 loss.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> round(float(keras_ssl.losses.vicreg(z1, z2)), 2)   # 25 invariance + 25 variance + 1 covariance
        57.99
    """
    terms = vicreg_terms(z1, z2, eps)
    return sim_coeff * terms["invariance"] + std_coeff * terms["variance"] + cov_coeff * terms["covariance"]
