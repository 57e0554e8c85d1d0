"""Self-supervised losses: pure functions of tensors, computed in float32.

Every function casts its inputs to float32 on entry so that the result is the
same under a mixed-precision policy, masks with `ops.where` (never a literal
large number, which overflows float16) and works in log space.
"""

from keras import ops


def _check_positive(**values):
    for name, value in values.items():
        if not value > 0:
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
        >>> info_nce(keras.random.normal((8, 16)), keras.random.normal((8, 16)), 0.2)
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
        >>> negative_cosine(keras.random.normal((8, 16)), keras.random.normal((8, 16)))
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
        >>> byol_loss(keras.random.normal((8, 16)), keras.random.normal((8, 16)))
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


def _check_batch(z, minimum=2):
    batch = ops.shape(z)[0]
    if isinstance(batch, int) and batch < minimum:
        raise ValueError(f"the batch size must be >= {minimum}, got {batch}.")


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
        >>> terms = barlow_twins_terms(keras.random.normal((8, 16)), keras.random.normal((8, 16)))
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
        >>> barlow_twins(keras.random.normal((8, 16)), keras.random.normal((8, 16)))
    """
    terms = barlow_twins_terms(z1, z2, lambd)
    return scale * (terms["on_diagonal"] + terms["off_diagonal"])


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
        >>> terms = vicreg_terms(keras.random.normal((8, 16)), keras.random.normal((8, 16)))
    """
    _check_batch(z1)
    z1 = ops.cast(z1, "float32")
    z2 = ops.cast(z2, "float32")
    batch = ops.cast(ops.shape(z1)[0], "float32")
    dim = ops.cast(ops.shape(z1)[1], "float32")
    variance = 0.0
    covariance = 0.0
    for z in (z1, z2):
        z = z - ops.mean(z, axis=0, keepdims=True)
        cov = ops.matmul(ops.transpose(z), z) / (batch - 1.0)
        variance += 0.5 * ops.mean(ops.relu(1.0 - ops.sqrt(ops.diagonal(cov) + eps)))
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
        >>> vicreg(keras.random.normal((8, 16)), keras.random.normal((8, 16)))
    """
    terms = vicreg_terms(z1, z2, eps)
    return (
        sim_coeff * terms["invariance"]
        + std_coeff * terms["variance"]
        + cov_coeff * terms["covariance"]
    )


def sinkhorn(scores, epsilon=0.05, iterations=3):
    """SwAV's Sinkhorn-Knopp: equipartitioned soft assignments of samples to prototypes.

    Alternately scales the prototypes' total mass to `1/K` each and the
    samples' to `1/B` each, starting from `exp(scores / epsilon)`. Computed in
    log space (so large `scores / epsilon` neither overflows nor underflows),
    in float32, without gradient.

    Args:
        scores: `(B, K)` sample-prototype scores.
        epsilon: entropic regularisation, > 0 (lower is sharper).
        iterations: number of normalisation rounds, >= 1.

    Returns:
        `(B, K)` float32 assignments; each row sums to 1, and each column
        to about `B / K`.

    Example:
        >>> q = sinkhorn(keras.random.normal((8, 4)), epsilon=0.05, iterations=3)
    """
    _check_positive(epsilon=epsilon, iterations=iterations)
    log_q = ops.stop_gradient(ops.cast(scores, "float32")) / epsilon
    # Sizes may be dynamic (TF graphs retraced with an unknown batch).
    log_b = ops.log(ops.cast(ops.shape(log_q)[0], "float32"))
    log_k = ops.log(ops.cast(ops.shape(log_q)[1], "float32"))
    log_q = log_q - ops.logsumexp(log_q)
    for _ in range(iterations):
        log_q = log_q - ops.logsumexp(log_q, axis=0, keepdims=True) - log_k
        log_q = log_q - ops.logsumexp(log_q, axis=1, keepdims=True) - log_b
    return ops.stop_gradient(ops.exp(log_q + log_b))


def _cross_entropy(target_probs, logits):
    """Mean over rows of `-sum(target * log_softmax(logits))`."""
    return -ops.mean(ops.sum(target_probs * ops.log_softmax(logits, axis=-1), axis=-1))


def swav(
    scores_per_crop,
    assignment_crops=(0, 1),
    temperature=0.1,
    epsilon=0.05,
    iterations=3,
    queue_scores=None,
):
    """SwAV's swapped prediction loss.

    For each assignment crop `i`, codes `q = sinkhorn(scores[i])` are predicted
    from every other crop `v` by `softmax(scores[v] / temperature)`.

    Args:
        scores_per_crop: list of `(B, K)` prototype scores, one per crop.
        assignment_crops: indices of the crops whose codes are predicted.
        temperature: softmax temperature of the predictions, > 0.
        epsilon: Sinkhorn regularisation, > 0.
        iterations: Sinkhorn rounds.
        queue_scores: optional list aligned with `assignment_crops` of
            `(Q, K)` scores of queued embeddings (or `None` entries), joined to
            the batch for Sinkhorn; only the batch rows' codes are used.

    Returns:
        Scalar float32 loss, averaged over the other crops then the
        assignment crops.

    Example:
        >>> scores = [keras.random.normal((8, 10)) for _ in range(4)]
        >>> swav(scores, assignment_crops=(0, 1))
    """
    _check_positive(temperature=temperature)
    num_crops = len(scores_per_crop)
    if num_crops < 2:
        raise ValueError(f"`scores_per_crop` needs at least 2 crops, got {num_crops}.")
    if not assignment_crops or any(not 0 <= i < num_crops for i in assignment_crops):
        raise ValueError(
            f"`assignment_crops` must be indices in [0, {num_crops}), got {assignment_crops}."
        )
    if queue_scores is None:
        queue_scores = [None] * len(assignment_crops)
    if len(queue_scores) != len(assignment_crops):
        raise ValueError("`queue_scores` must be aligned with `assignment_crops`.")
    scores_per_crop = [ops.cast(s, "float32") for s in scores_per_crop]
    loss = 0.0
    for i, queued in zip(assignment_crops, queue_scores):
        scores = scores_per_crop[i]
        batch = ops.shape(scores)[0]
        if queued is not None:
            scores = ops.concatenate([scores, ops.cast(queued, "float32")], axis=0)
        q = sinkhorn(scores, epsilon, iterations)[:batch]
        subloss = 0.0
        for v in range(num_crops):
            if v != i:
                subloss += _cross_entropy(q, scores_per_crop[v] / temperature)
        loss += subloss / (num_crops - 1)
    return loss / len(assignment_crops)


def dino(
    student_logits,
    teacher_logits,
    center,
    student_temperature=0.1,
    teacher_temperature=0.04,
):
    """DINO's loss: cross-entropy of the student against the centred, sharpened teacher.

    Args:
        student_logits: list of `(B, K)` student outputs, one per crop, the
            global crops first.
        teacher_logits: list of `(B, K)` teacher outputs for the global crops.
        center: `(K,)` or `(1, K)` running center subtracted from the teacher.
        student_temperature: > 0.
        teacher_temperature: > 0 (about 0.04-0.07; higher is unstable).

    Returns:
        Scalar float32 loss, the mean over pairs (teacher crop `i`, student
        crop `v != i`).

    Example:
        >>> s = [keras.random.normal((8, 32)) for _ in range(4)]
        >>> t = [keras.random.normal((8, 32)) for _ in range(2)]
        >>> dino(s, t, keras.ops.zeros((32,)))
    """
    _check_positive(
        student_temperature=student_temperature, teacher_temperature=teacher_temperature
    )
    if len(teacher_logits) > len(student_logits):
        raise ValueError(
            f"got {len(teacher_logits)} teacher crops for {len(student_logits)} student crops; "
            "the student must see every teacher crop."
        )
    center = ops.cast(center, "float32")
    student = [ops.cast(s, "float32") / student_temperature for s in student_logits]
    total = 0.0
    pairs = 0
    for i, t in enumerate(teacher_logits):
        probs = ops.stop_gradient(
            ops.softmax((ops.cast(t, "float32") - center) / teacher_temperature, axis=-1)
        )
        for v, s in enumerate(student):
            if v != i:
                total += _cross_entropy(probs, s)
                pairs += 1
    if pairs == 0:
        raise ValueError("DINO needs at least one (teacher crop, other student crop) pair.")
    return total / pairs


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
        >>> clip(keras.random.normal((8, 16)), keras.random.normal((8, 16)), 14.3)
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


def patch_statistics(patches, eps=1e-6):
    """Per-patch mean and std of MAE's `norm_pix_loss`: unbiased variance + `eps`.

    Args:
        patches: `(B, N, P)` pixel patches.
        eps: added to the variance.

    Returns:
        `(mean, std)`, each `(B, N, 1)` float32.

    Example:
        >>> mean, std = patch_statistics(patchify(images, 4))
    """
    patches = ops.cast(patches, "float32")
    n = patches.shape[-1]
    mean = ops.mean(patches, axis=-1, keepdims=True)
    # torch.var's default (MAE's forward_loss) is the unbiased variance.
    var = ops.sum(ops.square(patches - mean), axis=-1, keepdims=True) / max(n - 1, 1)
    return mean, ops.sqrt(var + eps)


def mae_reconstruction(target_patches, predicted_patches, mask, normalize=False, eps=1e-6):
    """MAE's loss: mean squared error on the masked patches only.

    Args:
        target_patches: `(B, N, P)` pixel patches of the image.
        predicted_patches: `(B, N, P)` decoder outputs.
        mask: `(B, N)`, 1 for masked (reconstructed) patches, 0 for visible.
        normalize: normalise each target patch by its mean and unbiased
            variance (`torch.var`'s default), as MAE's `norm_pix_loss`.
        eps: added to the patch variance when `normalize`.

    Returns:
        Scalar float32 loss: `sum(mean_P((pred - target)^2) * mask) / sum(mask)`
        (0 when nothing is masked).

    Example:
        >>> t = keras.random.uniform((2, 16, 48)); p = keras.random.uniform((2, 16, 48))
        >>> mae_reconstruction(t, p, keras.ops.ones((2, 16)), normalize=True)
    """
    _check_rank("target_patches", target_patches, 3)
    _check_rank("predicted_patches", predicted_patches, 3)
    _check_rank("mask", mask, 2)
    target = ops.cast(target_patches, "float32")
    if normalize:
        mean, std = patch_statistics(target, eps)
        target = (target - mean) / std
    error = ops.mean(ops.square(ops.cast(predicted_patches, "float32") - target), axis=-1)
    mask = ops.cast(mask, "float32")
    # The floor only matters when nothing is masked: 0 / tiny = 0, not NaN.
    return ops.sum(error * mask) / ops.maximum(ops.sum(mask), 1e-12)


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
        >>> embedding_std(keras.random.normal((64, 16)))  # ~0.25
    """
    return ops.mean(ops.std(l2_normalize(z), axis=0))
