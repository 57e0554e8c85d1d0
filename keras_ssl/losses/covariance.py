"""Covariance regularisers after VICReg's: TiCo's covariance contrast and VIbCReg's normalised decorrelation."""

from keras import ops

from keras_ssl.losses.alignment import _off_diagonal, _std_hinge
from keras_ssl.losses.common import _check_batch, l2_normalize


def _check_beta(beta):
    if isinstance(beta, (int, float)) and not 0.0 <= beta < 1.0:
        raise ValueError(f"`beta` must be in [0, 1), got {beta}.")


def tico_covariance(z, covariance, beta=0.9):
    """TiCo's running covariance after one batch: `beta * C + (1 - beta) * sg(zn^T zn) / B`.

    `zn` are the rows of `z` scaled to unit length; no gradient flows into the
    batch term (lightly's `TiCoLoss` detaches it), so the covariance contrast
    acts on the embeddings only through the quadratic form.

    Args:
        z: `(B, D)` embeddings of the first views (the online branch).
        covariance: `(D, D)` running covariance before this batch.
        beta: momentum of the running covariance, in [0, 1) (paper: 0.9).

    Returns:
        `(D, D)` float32 covariance including this batch.

    Example:
        >>> from keras_ssl.losses.covariance import tico_covariance
        >>> z = np.eye(4)[:2]   # two orthogonal unit rows
        >>> ops.convert_to_numpy(tico_covariance(z, np.zeros((4, 4)), beta=0.5)).diagonal().tolist()
        [0.25, 0.25, 0.0, 0.0]
    """
    _check_batch(z)
    _check_beta(beta)
    z = l2_normalize(ops.stop_gradient(ops.cast(z, "float32")))
    batch = ops.matmul(ops.transpose(z), z) / ops.cast(ops.shape(z)[0], "float32")
    return beta * ops.cast(covariance, "float32") + (1.0 - beta) * batch


def tico_terms(z1, z2, covariance, beta=0.9):
    """The two unweighted TiCo terms.

    Rows are L2-normalised; `C' = tico_covariance(z1, covariance, beta)` is the
    running covariance including this batch (no gradient).

    Args:
        z1: `(B, D)` online embeddings (the covariance is theirs).
        z2: `(B, D)` embeddings of the other views (a momentum target: pass
            them through `stop_gradient`; this function stops none).
        covariance: `(D, D)` running covariance before this batch.
        beta: momentum of the running covariance, in [0, 1).

    Returns:
        Dict of scalars: `invariance = 1 - mean_i <z1_i, z2_i>` (the
        transformation invariance) and `covariance_contrast = mean_i z1_i C'
        z1_i^T` (the mean squared projection of each embedding on the past
        embeddings: a contrast with an implicit memory bank).

    Example:
        >>> from keras_ssl.losses.covariance import tico_terms
        >>> rng = np.random.default_rng(0)
        >>> z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> terms = tico_terms(z1, z2, np.zeros((16, 16)))
        >>> {name: round(float(value), 3) for name, value in terms.items()}
        {'invariance': 0.993, 'covariance_contrast': 0.018}
        >>> round(float(tico_terms(z1, z1, np.zeros((16, 16)))["invariance"]), 4)   # equal views
        0.0
    """
    _check_batch(z1)
    covariance = tico_covariance(z1, covariance, beta)
    z1, z2 = l2_normalize(z1), l2_normalize(z2)
    return {
        "invariance": 1.0 - ops.mean(ops.sum(z1 * z2, axis=-1)),
        "covariance_contrast": ops.mean(ops.sum(ops.matmul(z1, covariance) * z1, axis=-1)),
    }


def tico(z1, z2, covariance, beta=0.9, rho=8.0):
    """TiCo loss: `invariance + rho * covariance_contrast` (`tico_terms`).

    Args:
        z1: `(B, D)` online embeddings.
        z2: `(B, D)` embeddings of the other views.
        covariance: `(D, D)` running covariance before this batch.
        beta: momentum of the running covariance, in [0, 1).
        rho: weight of the covariance contrast (lightly: 8).

    Returns:
        Scalar float32 loss.

    Example:
        >>> from keras_ssl.losses.covariance import tico
        >>> rng = np.random.default_rng(0)
        >>> z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> round(float(tico(z1, z2, np.zeros((16, 16)))), 3)   # 0.993 + 8 * 0.018
        1.134
    """
    if isinstance(rho, (int, float)) and not rho >= 0:
        raise ValueError(f"`rho` must be >= 0, got {rho}.")
    terms = tico_terms(z1, z2, covariance, beta)
    return terms["invariance"] + rho * terms["covariance_contrast"]


def _normalised_decorrelation(z):
    """Mean of the squared off-diagonal entries of the feature correlation matrix."""
    centred = z - ops.mean(z, axis=0, keepdims=True)
    columns = l2_normalize(centred, axis=0)
    return ops.mean(ops.square(_off_diagonal(ops.matmul(ops.transpose(columns), columns))))


def vibcreg_terms(z1, z2, eps=1e-4):
    """The three unweighted VIbCReg terms (Lee & Aune 2021, official `vibcreg/losses`).

    Args:
        z1: `(B, D)` embeddings of the first views, `B >= 2`.
        z2: `(B, D)` embeddings of the second views.
        eps: added to the variance before the square root.

    Returns:
        Dict of scalars: `invariance` (mean squared error of the views),
        `variance` (`mean(relu(1 - sqrt(var + eps)))` over dimensions, summed
        over the two views: VICReg's hinge without its `/ 2`) and `covariance`
        (each view centred and its columns scaled to unit L2 norm, so that
        `zn^T zn` is the correlation matrix; the mean over its `D^2` entries of
        the squared off-diagonal ones, summed over the two views). The
        correlation, unlike VICReg's covariance, does not grow with the
        feature scale, so its weight need not change with it.

    Example:
        >>> from keras_ssl.losses.covariance import vibcreg_terms
        >>> rng = np.random.default_rng(0)
        >>> z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> terms = vibcreg_terms(z1, z2)
        >>> {name: round(float(value), 3) for name, value in terms.items()}
        {'invariance': 2.042, 'variance': 0.179, 'covariance': 0.27}
        >>> float(vibcreg_terms(z1, z1)["invariance"])   # equal views
        0.0
    """
    _check_batch(z1)
    if not eps >= 0:
        raise ValueError(f"`eps` must be >= 0, got {eps}.")
    z1, z2 = ops.cast(z1, "float32"), ops.cast(z2, "float32")
    return {
        "invariance": ops.mean(ops.square(z1 - z2)),
        "variance": _std_hinge(z1, eps) + _std_hinge(z2, eps),
        "covariance": _normalised_decorrelation(z1) + _normalised_decorrelation(z2),
    }


def vibcreg(z1, z2, sim_coeff=25.0, std_coeff=25.0, cov_coeff=200.0, eps=1e-4):
    """VIbCReg loss: the weighted sum of its three terms (`vibcreg_terms`).

    Args:
        z1: `(B, D)` embeddings of the first views.
        z2: `(B, D)` embeddings of the second views.
        sim_coeff: weight of the invariance term (paper: 25).
        std_coeff: weight of the variance term (25).
        cov_coeff: weight of the normalised covariance term (200).
        eps: added to the variance before the square root.

    Returns:
        Scalar float32 loss.

    Example:
        >>> from keras_ssl.losses.covariance import vibcreg
        >>> rng = np.random.default_rng(0)
        >>> z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> round(float(vibcreg(z1, z2)), 2)   # 25 invariance + 25 variance + 200 covariance
        109.48
    """
    terms = vibcreg_terms(z1, z2, eps)
    return sim_coeff * terms["invariance"] + std_coeff * terms["variance"] + cov_coeff * terms["covariance"]
