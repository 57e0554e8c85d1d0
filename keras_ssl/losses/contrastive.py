"""Contrastive losses: NT-Xent (SimCLR), InfoNCE (MoCo, NNCLR) and CLIP's symmetric loss."""

from keras import ops

from keras_ssl.losses.common import _check_positive, l2_normalize


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
        >>> rng = np.random.default_rng(0)
        >>> z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> round(float(keras_ssl.losses.nt_xent(z1, z2, temperature=0.5)), 3)
        2.782
        >>> round(float(keras_ssl.losses.nt_xent(z1, z1, temperature=0.5)), 3)   # equal views: lower
        1.147
    """
    _check_positive(temperature=temperature)
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


def info_nce(query, keys, temperature=0.2, negatives=None, in_batch_negatives=True):
    """InfoNCE with the positive for `query[i]` at `keys[i]`.

    The logits of `query[i]` are its similarity with its positive `keys[i]`,
    with the other rows of `keys` when `in_batch_negatives` (MoCo v3, NNCLR)
    and with every row of `negatives` when given (MoCo v2's queue: its
    official code uses `[q.k+, q.queue] / T`, so pass
    `in_batch_negatives=False` there). All rows are L2-normalised.

    Args:
        query: `(B, D)` embeddings.
        keys: `(B, D)` embeddings, `keys[i]` the positive of `query[i]`.
        temperature: softmax temperature, > 0.
        negatives: optional `(K, D)` extra negatives.
        in_batch_negatives: use the other keys of the batch as negatives.

    Returns:
        Scalar float32 loss (mean cross-entropy).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> query, keys = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> round(float(keras_ssl.losses.info_nce(query, keys, 0.2)), 3)
        2.494
        >>> round(float(keras_ssl.losses.info_nce(query, query, 0.2)), 3)   # keys equal to the queries
        0.099
        >>> queue = rng.normal(size=(32, 16))   # MoCo: negatives from a queue only
        >>> round(float(keras_ssl.losses.info_nce(query, keys, 0.2, negatives=queue, in_batch_negatives=False)), 3)
        4.087
    """
    _check_positive(temperature=temperature)
    if not in_batch_negatives and negatives is None:
        raise ValueError("info_nce without in-batch negatives needs `negatives`.")
    q = l2_normalize(query)
    k = l2_normalize(keys)
    if in_batch_negatives:
        logits = ops.matmul(q, ops.transpose(k))  # the positive on the diagonal
        index = ops.expand_dims(ops.arange(ops.shape(q)[0]), 1)
    else:
        logits = ops.sum(q * k, axis=1, keepdims=True)  # the positive in column 0
        index = ops.zeros((ops.shape(q)[0], 1), "int32")
    if negatives is not None:
        logits = ops.concatenate([logits, ops.matmul(q, ops.transpose(l2_normalize(negatives)))], axis=1)
    logits = logits / temperature
    log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)
    return -ops.mean(ops.take_along_axis(log_prob, index, axis=1))


def clip(image_embeddings, text_embeddings, logit_scale):
    """CLIP's symmetric contrastive loss; pair `i` is `(image[i], text[i])`.

    Args:
        image_embeddings: `(B, D)` image embeddings (L2-normalised inside).
        text_embeddings: `(B, D)` text embeddings (L2-normalised inside).
        logit_scale: scalar, the (already exponentiated and clamped) inverse
            temperature.

    Returns:
        Scalar float32 loss, the mean of the image-to-text and text-to-image
        cross-entropies.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> image_embeddings, text_embeddings = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> round(float(keras_ssl.losses.clip(image_embeddings, text_embeddings, 14.3)), 2)
        4.4
        >>> round(float(keras_ssl.losses.clip(image_embeddings, image_embeddings, 14.3)), 3)   # matched pairs
        0.001
    """
    if isinstance(logit_scale, (int, float)):
        _check_positive(logit_scale=logit_scale)
    image = l2_normalize(image_embeddings)
    text = l2_normalize(text_embeddings)
    logits = ops.cast(logit_scale, "float32") * ops.matmul(image, ops.transpose(text))
    diagonal = ops.expand_dims(ops.arange(ops.shape(logits)[0]), 1)

    def direction(x):
        log_prob = ops.log_softmax(x, axis=1)
        return -ops.mean(ops.take_along_axis(log_prob, diagonal, axis=1))

    return 0.5 * (direction(logits) + direction(ops.transpose(logits)))
