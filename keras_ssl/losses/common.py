"""What every loss shares: argument checks, L2 normalisation and the embedding-std monitor."""

from keras import ops


def _check_positive(**values):
    # Python numbers are checked here; a tensor (a warmed-up temperature) is the caller's to keep > 0.
    for name, value in values.items():
        if isinstance(value, (int, float)) and not value > 0:
            raise ValueError(f"`{name}` must be > 0, got {value}.")


def _check_rank(name, x, rank):
    if len(ops.shape(x)) != rank:
        raise ValueError(f"`{name}` must have rank {rank}, got shape {ops.shape(x)}.")


def l2_normalize(x, axis=-1, eps=1e-12):
    """Scale `x` to unit L2 norm along `axis`, in float32.

    Args:
        x: tensor.
        axis: axis to normalise.
        eps: floor on the squared norm, so a zero vector stays finite.

    Example:
        >>> ops.convert_to_numpy(keras_ssl.losses.l2_normalize(ops.ones((2, 4)))).tolist()  # rows of 0.5
        [[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]
        >>> ops.convert_to_numpy(keras_ssl.losses.l2_normalize(ops.zeros((1, 3)))).tolist()  # stays finite
        [[0.0, 0.0, 0.0]]
    """
    x = ops.cast(x, "float32")
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), eps))


def _check_batch(z, minimum=2):
    batch = ops.shape(z)[0]
    if isinstance(batch, int) and batch < minimum:
        raise ValueError(f"the batch size must be >= {minimum}, got {batch}.")


def embedding_std(z):
    """Mean over dimensions of the batch std of L2-normalised `z`, in the graph.

    The training step's collapse metric (`z_std`); `evaluation.embedding_std`
    is the NumPy version for stored embeddings.

    Args:
        z: `(B, D)` embeddings.

    Returns:
        scalar tensor: about `1/sqrt(D)` for healthy embeddings, 0 when they
        have collapsed to a point.

    Example:
        >>> z = np.random.default_rng(0).normal(size=(64, 16))
        >>> round(float(keras_ssl.losses.embedding_std(z)), 2)  # ~1 / sqrt(16)
        0.25
        >>> float(keras_ssl.losses.embedding_std(np.ones((64, 16))))  # collapsed
        0.0
    """
    return ops.mean(ops.std(l2_normalize(z), axis=0))
