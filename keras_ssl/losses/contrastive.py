"""Contrastive losses: NT-Xent (SimCLR), InfoNCE (MoCo, NNCLR), their decoupled forms (DCL, DCLW),
supervised contrastive (SupCon) and CLIP's symmetric loss."""

from keras import ops

from keras_ssl.losses.common import _check_batch, _check_positive, _check_rank, l2_normalize

WEIGHTINGS = (None, "von_mises")


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


def info_nce(
    query, keys, temperature=0.2, negatives=None, in_batch_negatives=True, decoupled=False, weighting=None, sigma=0.5
):
    """InfoNCE with the positive for `query[i]` at `keys[i]`; optionally decoupled (DCL).

    The logits of `query[i]` are its similarity with its positive `keys[i]`,
    with the other rows of `keys` when `in_batch_negatives` (MoCo v3, NNCLR)
    and with every row of `negatives` when given (MoCo v2's queue: its
    official code uses `[q.k+, q.queue] / T`, so pass
    `in_batch_negatives=False` there). All rows are L2-normalised.
    `decoupled=True` drops the positive from the softmax's denominator
    (Yeh et al. 2022): `-s+ / T + log sum_neg exp(s / T)`, see `dcl`.

    Args:
        query: `(B, D)` embeddings.
        keys: `(B, D)` embeddings, `keys[i]` the positive of `query[i]`.
        temperature: softmax temperature, > 0.
        negatives: optional `(K, D)` extra negatives.
        in_batch_negatives: use the other keys of the batch as negatives.
        decoupled: leave the positive out of the denominator (DCL).
        weighting: with `decoupled`: None, or `"von_mises"` to weight each
            positive term by `von_mises_weights(query, keys, sigma)` (DCLW).
        sigma: scale of the von Mises-Fisher weighting, > 0.

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
        >>> from keras_ssl.losses.contrastive import info_nce
        >>> round(float(info_nce(query, keys, 0.2, negatives=queue, in_batch_negatives=False, decoupled=True)), 3)
        4.057
    """
    _check_positive(temperature=temperature)
    _check_weighting(weighting, sigma, decoupled)
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
    if decoupled:
        positive = ops.take_along_axis(logits, index, axis=1)[:, 0]
        is_positive = ops.expand_dims(ops.arange(ops.shape(logits)[1]), 0) == index
        weights = von_mises_weights(query, keys, sigma) if weighting else None
        return _decoupled(positive, ops.where(is_positive, _neg_inf(), logits), weights)
    log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)
    return -ops.mean(ops.take_along_axis(log_prob, index, axis=1))


def dcl(z1, z2, temperature=0.1, weighting=None, sigma=0.5):
    """DCL, the decoupled contrastive loss (Yeh et al. 2022, eq. 6), and with weighting DCLW.

    NT-Xent with the positive pair taken out of the denominator: view `i`'s
    term is `-w_i s(i, twin) / T + log sum_{j != i, twin} exp(s(i, j) / T)`
    over the other `2B - 2` views (one log over both views' negatives, as
    the paper's equation and lightly's `DCLLoss`).
    So NT-Xent's term minus DCL's is `log(1 + exp(s+ / T) / sum_neg exp(s / T))`
    per view (`w = 1`). The mean over the `2B` views; symmetric in `z1, z2`.

    Args:
        z1: `(B, D)` embeddings of the first views.
        z2: `(B, D)` embeddings of the second views, row `i` the twin of
            `z1[i]`.
        temperature: softmax temperature, > 0 (paper: 0.1 on ImageNet).
        weighting: None (DCL, `w = 1`) or `"von_mises"` (DCLW, `w` from
            `von_mises_weights(z1, z2, sigma)`).
        sigma: scale of the von Mises-Fisher weighting, > 0 (paper: 0.5).

    Returns:
        Scalar float32 loss.

    Example:
        >>> from keras_ssl.losses.contrastive import dcl
        >>> rng = np.random.default_rng(0)
        >>> z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> round(float(dcl(z1, z2, temperature=0.5)), 3)   # below NT-Xent's 2.782 on the same views
        2.711
        >>> round(float(dcl(z1, z2, temperature=0.5, weighting="von_mises")), 3)   # DCLW
        2.937
    """
    _check_positive(temperature=temperature)
    _check_weighting(weighting, sigma)
    _check_pair(z1, z2)
    z = l2_normalize(ops.concatenate([z1, z2], axis=0))
    n = ops.shape(z)[0]
    logits = ops.matmul(z, ops.transpose(z)) / temperature
    index = ops.arange(n)
    twin = (index + n // 2) % n
    positive = ops.take_along_axis(logits, ops.expand_dims(twin, 1), axis=1)[:, 0]
    column = ops.expand_dims(index, 0)
    dropped = (column == ops.expand_dims(index, 1)) | (column == ops.expand_dims(twin, 1))
    weights = ops.tile(von_mises_weights(z1, z2, sigma), [2]) if weighting else None  # one weight per pair
    return _decoupled(positive, ops.where(dropped, _neg_inf(), logits), weights)


def von_mises_weights(a, b, sigma=0.5):
    """DCLW's negative von Mises-Fisher weights of the positive pairs `(a[i], b[i])`.

    `w_i = 2 - exp(s_i / sigma) / mean_j exp(s_j / sigma)` with `s_i` the
    cosine of pair `i` (Yeh et al. 2022, sec. 4): pairs already close
    weigh less; the weights average 1. No gradient flows through them
    (as lightly's `negative_mises_fisher_weights`, which detaches).

    Args:
        a: `(B, D)` embeddings.
        b: `(B, D)` embeddings, `b[i]` the positive of `a[i]`.
        sigma: scale of the cosines, > 0.

    Returns:
        `(B,)` float32 weights.

    Example:
        >>> from keras_ssl.losses.contrastive import von_mises_weights
        >>> a = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> ops.convert_to_numpy(von_mises_weights(a, a)).tolist()   # equal cosines: weight 1
        [1.0, 1.0]
    """
    _check_positive(sigma=sigma)
    similarity = ops.sum(l2_normalize(a) * l2_normalize(b), axis=1) / sigma
    count = ops.cast(ops.shape(similarity)[0], "float32")
    return ops.stop_gradient(2.0 - count * ops.softmax(similarity, axis=0))


def supcon(z1, z2, labels, temperature=0.1, base_temperature=None):
    """Supervised contrastive loss, `L^sup_out` of Khosla et al. (2020, eq. 2).

    Each of the `2B` views is an anchor; its positives are the other views
    of its class (both views of every same-label image, its twin included)
    and it is classified against all `2B - 1` other views:
    `-1/|P(i)| sum_{p in P(i)} log softmax_{a != i}(s(i, a) / T)[p]`. Label
    -1 marks an unlabelled image: its only positive is its twin, and it is
    no one else's positive, so with every label -1 the loss is `nt_xent`.
    The mean over the `2B` views, times `temperature / base_temperature`
    (the official code's rescaling; None: no rescaling, the paper's loss).

    Args:
        z1: `(B, D)` embeddings of the first views.
        z2: `(B, D)` embeddings of the second views, row `i` the twin of
            `z1[i]`.
        labels: `(B,)` integer class labels, -1 for unlabelled images.
        temperature: softmax temperature, > 0 (paper: 0.1).
        base_temperature: the official code's reference temperature (its
            default 0.07); None means `temperature` (a factor of 1).

    Returns:
        Scalar float32 loss.

    Example:
        >>> from keras_ssl.losses.contrastive import supcon
        >>> rng = np.random.default_rng(0)
        >>> z1, z2 = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> round(float(supcon(z1, z2, np.array([0, 1, 2, 3, 0, 1, 2, 3]), temperature=0.5)), 3)
        2.939
        >>> round(float(supcon(z1, z2, -np.ones(8, "int32"), temperature=0.5)), 3)   # unlabelled: NT-Xent
        2.782
    """
    _check_positive(temperature=temperature)
    if base_temperature is not None:
        _check_positive(base_temperature=base_temperature)
    _check_pair(z1, z2)
    _check_rank("labels", labels, 1)
    count, batch = ops.shape(labels)[0], ops.shape(z1)[0]
    if isinstance(count, int) and isinstance(batch, int) and count != batch:
        raise ValueError(f"got {count} labels for a batch of {batch}.")
    z = l2_normalize(ops.concatenate([z1, z2], axis=0))
    n = ops.shape(z)[0]
    index = ops.arange(n)
    is_self = ops.expand_dims(index, 1) == ops.expand_dims(index, 0)
    logits = ops.where(is_self, _neg_inf(), ops.matmul(z, ops.transpose(z)) / temperature)
    log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)
    labels = ops.cast(labels, "int32")
    label = ops.concatenate([labels, labels], axis=0)
    image = index % (n // 2)
    same_class = (ops.expand_dims(label, 1) == ops.expand_dims(label, 0)) & ops.expand_dims(label >= 0, 1)
    same_image = ops.expand_dims(image, 1) == ops.expand_dims(image, 0)
    positive = (same_class | same_image) & ~is_self  # never empty: the twin is always there
    count = ops.sum(ops.cast(positive, "float32"), axis=1)
    mean_log_prob = ops.sum(ops.where(positive, log_prob, ops.zeros_like(log_prob)), axis=1) / count
    scale = 1.0 if base_temperature is None else temperature / base_temperature
    return -scale * ops.mean(mean_log_prob)


def _neg_inf():
    return ops.cast(float("-inf"), "float32")


def _decoupled(positive, negatives, weights=None):
    """Mean over rows of `-w * positive + logsumexp(negatives)` (masked entries are -inf)."""
    if weights is not None:
        positive = positive * weights
    return ops.mean(ops.logsumexp(negatives, axis=1) - positive)


def _check_weighting(weighting, sigma, decoupled=True):
    if weighting not in WEIGHTINGS:
        raise ValueError(f"`weighting` must be one of {WEIGHTINGS}, got {weighting!r}.")
    if weighting is not None and not decoupled:
        raise ValueError("`weighting` weights the decoupled loss's positive term: pass decoupled=True.")
    _check_positive(sigma=sigma)


def _check_pair(z1, z2):
    _check_rank("z1", z1, 2)
    _check_rank("z2", z2, 2)
    # Static sizes only: inside a traced step a batch size may be unknown.
    shape1, shape2 = ops.shape(z1), ops.shape(z2)
    if any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(shape1, shape2)):
        raise ValueError(f"`z1` and `z2` must have the same shape, got {shape1} and {shape2}.")
    _check_batch(z1)


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
