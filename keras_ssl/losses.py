"""Self-supervised losses: pure functions of tensors, computed in float32.

Every function casts its inputs to float32 on entry so that the result is the
same under a mixed-precision policy, masks with `ops.where` (never a literal
large number, which overflows float16) and works in log space.
"""

from keras import ops


def l2_normalize(x, axis=-1, eps=1e-12):
    """Scale `x` to unit L2 norm along `axis`, in float32.

    Args:
        x: tensor.
        axis: axis to normalise.
        eps: floor on the squared norm, so a zero vector stays finite.

    Example:
        >>> l2_normalize(keras.ops.ones((2, 4)))  # rows of 0.5
    """
    x = ops.cast(x, "float32")
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), eps))


def nt_xent(z1, z2, temperature=0.5):
    """NT-Xent, SimCLR's normalised temperature-scaled cross-entropy.

    Each of the `2B` views is classified against the other `2B - 1`: its twin
    is the positive and the `2B - 2` other views are negatives. The
    self-similarity is removed from the softmax with `ops.where` (subtracting
    it afterwards would leak gradient). Symmetric in `z1, z2`.

    Args:
        z1: `(B, D)` embeddings of the first views.
        z2: `(B, D)` embeddings of the second views, row `i` the twin of
            `z1[i]`.
        temperature: softmax temperature, > 0.

    Returns:
        Scalar float32 loss, the mean over the `2B` views.

    Example:
        >>> z1 = keras.random.normal((8, 16)); z2 = keras.random.normal((8, 16))
        >>> nt_xent(z1, z2, temperature=0.5)
    """
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    z = l2_normalize(ops.concatenate([z1, z2], axis=0))
    n = ops.shape(z)[0]
    batch = n // 2
    logits = ops.matmul(z, ops.transpose(z)) / temperature
    index = ops.arange(n)
    self_mask = ops.expand_dims(index, 1) == ops.expand_dims(index, 0)
    logits = ops.where(self_mask, ops.cast(float("-inf"), "float32"), logits)
    twin = (index + batch) % n
    log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)
    positive = ops.take_along_axis(log_prob, ops.expand_dims(twin, 1), axis=1)
    return -ops.mean(positive)


def info_nce(query, keys, temperature=0.2, negatives=None):
    """InfoNCE with the positive for `query[i]` at `keys[i]`.

    The logits of `query[i]` are its similarities with every row of `keys`
    (in-batch negatives, as MoCo v3) and, when given, with every row of
    `negatives` (a queue, as MoCo v2). All rows are L2-normalised.

    Args:
        query: `(B, D)` embeddings.
        keys: `(B, D)` embeddings, `keys[i]` the positive of `query[i]`.
        temperature: softmax temperature, > 0.
        negatives: optional `(K, D)` extra negatives.

    Returns:
        Scalar float32 loss (mean cross-entropy).

    Example:
        >>> info_nce(keras.random.normal((8, 16)), keras.random.normal((8, 16)), 0.2)
    """
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    q = l2_normalize(query)
    candidates = l2_normalize(keys)
    if negatives is not None:
        candidates = ops.concatenate([candidates, l2_normalize(negatives)], axis=0)
    logits = ops.matmul(q, ops.transpose(candidates)) / temperature
    log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)
    index = ops.expand_dims(ops.arange(ops.shape(q)[0]), 1)
    return -ops.mean(ops.take_along_axis(log_prob, index, axis=1))

