"""Patch-level self-distillation (iBOT, DINOv2), the KoLeo regulariser (DINOv2) and a masked Sinkhorn.

The [CLS]-token terms are `keras_ssl.losses.dino`; DINOv2's `sinkhorn_knopp_teacher` on class
tokens is `keras_ssl.losses.sinkhorn(logits, epsilon=teacher_temperature, iterations=3)` (the
same normalisations, in log space). On patch tokens DINOv2 runs it over the masked patches only,
with `B` = their number: `masked_sinkhorn` does that with static shapes.
"""

from keras import ops

from keras_ssl.losses.common import _check_batch, _check_positive, _check_rank


def masked_patch_distillation(student_patch_logits, teacher_patch_probs, masks, student_temperature=0.1):
    """iBOT's masked-patch loss: cross-entropy of the student's patch outputs against the teacher's.

    Per image, the mean over its masked patches of `-sum(t * log_softmax(s / T))`; then the mean
    over all images, an image without masked patches counting 0. This is iBOT's `iBOTLoss` patch
    term (bytedance/ibot main_ibot.py) and DINOv2's `iBOTPatchLoss.forward` (and `forward_masked`
    with collate's `masks_weight = 1 / count`), which agree.

    Args:
        student_patch_logits: `(B, N, K)` student head outputs for the patch tokens.
        teacher_patch_probs: `(B, N, K)` teacher targets (centred and sharpened softmax, or
            Sinkhorn codes); no gradient flows into them.
        masks: `(B, N)`, 1 where the student's patch was masked.
        student_temperature: > 0 (iBOT and DINOv2: 0.1).

    Returns:
        Scalar float32 loss.

    Example:
        >>> from keras_ssl.losses.distillation import masked_patch_distillation
        >>> s = np.zeros((2, 4, 3))                            # uniform student: ln 3 per patch
        >>> t = np.full((2, 4, 3), 1 / 3)
        >>> masks = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])    # the 2nd image has no masked patch
        >>> round(float(masked_patch_distillation(s, t, masks)), 4)   # (ln 3 + 0) / 2
        0.5493
    """
    _check_positive(student_temperature=student_temperature)
    s = ops.cast(student_patch_logits, "float32")
    t = ops.stop_gradient(ops.cast(teacher_patch_probs, "float32"))
    masks = ops.cast(masks, "float32")
    _check_rank("student_patch_logits", s, 3)
    _check_rank("masks", masks, 2)
    cross_entropy = -ops.sum(t * ops.log_softmax(s / student_temperature, axis=-1), axis=-1)
    per_image = ops.sum(cross_entropy * masks, axis=-1) / ops.maximum(ops.sum(masks, axis=-1), 1.0)
    return ops.mean(per_image)


def gathered_patch_distillation(student_rows, teacher_rows, weights, num_images, student_temperature=0.1):
    """`masked_patch_distillation` on the masked patches gathered into rows (DINOv2's `forward_masked`).

    `-sum_r w_r * sum_k t_rk * log_softmax(s_r / T)_k / num_images`, the rows being the masked
    patches of all images (`keras_ssl.layers.distillation_heads.masked_rows`), each weighted by
    `1 / (masked patches of its image)` (collate's `masks_weight`), padding rows by 0. With
    `num_images = B` it equals `masked_patch_distillation` on the whole `(B, N, K)` outputs,
    while the heads ran on the masked patches only.

    Args:
        student_rows: `(M, K)` student head outputs of the gathered patches.
        teacher_rows: `(M, K)` teacher targets of the same patches; no gradient flows into them.
        weights: `(M,)` row weights.
        num_images: `B`, the images the rows come from (a number or a scalar tensor).
        student_temperature: > 0 (iBOT and DINOv2: 0.1).

    Returns:
        Scalar float32 loss.

    Example:
        >>> from keras_ssl.losses.distillation import gathered_patch_distillation, masked_patch_distillation
        >>> s = np.random.default_rng(0).normal(size=(2, 4, 3))
        >>> t = np.full((2, 4, 3), 1 / 3)
        >>> masks = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
        >>> rows = gathered_patch_distillation(s[0, :3], t[0, :3], np.array([0.5, 0.5, 0.0]), 2)
        >>> bool(np.isclose(rows, masked_patch_distillation(s, t, masks)))
        True
    """
    _check_positive(student_temperature=student_temperature)
    s = ops.cast(student_rows, "float32")
    t = ops.stop_gradient(ops.cast(teacher_rows, "float32"))
    _check_rank("student_rows", s, 2)
    _check_rank("weights", weights, 1)
    cross_entropy = -ops.sum(t * ops.log_softmax(s / student_temperature, axis=-1), axis=-1)
    return ops.sum(cross_entropy * ops.cast(weights, "float32")) / ops.cast(num_images, "float32")


def koleo(features, eps=1e-8):
    """DINOv2's KoLeo regulariser: `-mean(log(distance to the nearest other feature))` on unit features.

    As `KoLeoLoss` (dinov2/loss/koleo_loss.py): rows normalised (`x / max(|x|, eps)`), each row's
    nearest neighbour the other row of largest dot product, the distance torch's
    `PairwiseDistance(2, eps)` (`|x - y + eps|`), and `-mean(log(d + eps))`. The gradient flows
    through both ends of each pair; the neighbour choice is not differentiated. DINOv2 applies it
    to each global crop's student class tokens separately (before the head), weight 0.1.

    Args:
        features: `(B, D)`, B >= 2.
        eps: DINOv2's 1e-8.

    Returns:
        Scalar float32 loss (lower when the features are spread out).

    Example:
        >>> from keras_ssl.losses.distillation import koleo
        >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])  # neighbours sqrt(2) apart
        >>> round(float(koleo(x)), 4)   # -ln sqrt(2)
        -0.3466
    """
    x = ops.cast(features, "float32")
    _check_rank("features", x, 2)
    _check_batch(x, minimum=2)
    x = x / ops.maximum(ops.norm(x, axis=-1, keepdims=True), eps)
    dots = ops.matmul(x, ops.transpose(x))
    # -1 on the diagonal (as DINOv2): a row is never its own neighbour.
    dots = ops.where(ops.eye(ops.shape(x)[0], dtype="bool"), -1.0, dots)
    nearest = ops.take(x, ops.stop_gradient(ops.argmax(dots, axis=1)), axis=0)
    distances = ops.norm(x - nearest + eps, axis=-1)
    return -ops.mean(ops.log(distances + eps))


def masked_sinkhorn(scores, mask, epsilon=0.05, iterations=3):
    """`keras_ssl.losses.sinkhorn` on the rows where `mask` is 1; the other rows get 0.

    DINOv2's `iBOTPatchLoss.sinkhorn_knopp_teacher` runs on the masked patches gathered into a
    list, with `B = n_masked_patches`; gathering a data-dependent number of rows is not static,
    so here all rows stay and the unmasked ones carry no mass.

    Args:
        scores: `(M, K)` teacher logits (e.g. the `(B * N, K)` patch outputs, flattened).
        mask: `(M,)`, 1 for the rows that take part.
        epsilon: the teacher temperature, > 0.
        iterations: normalisation rounds, >= 1 (DINOv2: 3).

    Returns:
        `(M, K)` float32 codes, no gradient: each masked row sums to 1, the others are 0.

    Example:
        >>> from keras_ssl.losses.distillation import masked_sinkhorn
        >>> scores = 0.1 * np.random.default_rng(1).normal(size=(6, 4))
        >>> mask = np.array([1, 1, 0, 1, 1, 0])
        >>> q = masked_sinkhorn(scores, mask, epsilon=0.05)
        >>> bool(np.allclose(q[mask == 1], keras_ssl.losses.sinkhorn(scores[mask == 1], 0.05), atol=1e-6))
        True
        >>> ops.convert_to_numpy(ops.sum(q, axis=1)).round(4).tolist()
        [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    """
    _check_positive(epsilon=epsilon, iterations=iterations)
    log_q = ops.stop_gradient(ops.cast(scores, "float32")) / epsilon
    keep = ops.cast(mask, "float32")[:, None] > 0
    log_b = ops.log(ops.maximum(ops.sum(ops.cast(keep, "float32")), 1.0))
    log_k = ops.log(ops.cast(ops.shape(log_q)[1], "float32"))

    def kept_logsumexp(x, axis=None):
        # Left-out rows never enter a total; they hold 0 in `log_q` so it stays finite.
        return ops.logsumexp(ops.where(keep, x, float("-inf")), axis=axis, keepdims=axis is not None)

    log_q = ops.where(keep, log_q - kept_logsumexp(log_q), 0.0)
    for _ in range(iterations):
        log_q = log_q - kept_logsumexp(log_q, axis=0) - log_k
        log_q = ops.where(keep, log_q - ops.logsumexp(log_q, axis=1, keepdims=True) - log_b, 0.0)
    return ops.stop_gradient(ops.where(keep, ops.exp(log_q + log_b), 0.0))
