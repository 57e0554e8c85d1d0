"""Losses on soft assignments: Sinkhorn-Knopp codes (SwAV) and self-distillation (DINO)."""

from keras import ops

from keras_ssl.losses.common import _check_positive


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
        >>> scores = 0.1 * np.random.default_rng(1).normal(size=(8, 4))   # e.g. cosines to prototypes
        >>> q = keras_ssl.losses.sinkhorn(scores, epsilon=0.05, iterations=3)
        >>> tuple(q.shape), bool(np.allclose(ops.sum(q, axis=1), 1.0, atol=1e-5))
        ((8, 4), True)
        >>> [round(float(total), 1) for total in ops.sum(q, axis=0)]   # about B / K = 2
        [2.0, 2.0, 1.9, 2.0]
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
        >>> rng = np.random.default_rng(0)
        >>> scores = [rng.normal(size=(8, 10)) for _ in range(4)]   # 2 global and 2 local crops
        >>> round(float(keras_ssl.losses.swav(scores, assignment_crops=(0, 1))), 3)
        15.472
    """
    _check_positive(temperature=temperature)
    num_crops = len(scores_per_crop)
    if num_crops < 2:
        raise ValueError(f"`scores_per_crop` needs at least 2 crops, got {num_crops}.")
    if not assignment_crops or any(not 0 <= i < num_crops for i in assignment_crops):
        raise ValueError(f"`assignment_crops` must be indices in [0, {num_crops}), got {assignment_crops}.")
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


def self_distillation(student_logits, teacher_probs, student_temperature=0.1):
    """DINO's cross-view loss given the teacher's targets: the mean over pairs (teacher crop `i`,
    student crop `v != i`) of the cross-entropy `-sum(t_i * log_softmax(s_v / T))`.

    `dino` feeds it the centred and sharpened teacher softmax; DINOv2 its Sinkhorn-Knopp codes.

    Args:
        student_logits: list of `(B, K)` student outputs, one per crop, the global crops first.
        teacher_probs: list of `(B, K)` teacher targets for the global crops (no gradient).
        student_temperature: > 0.

    Returns:
        Scalar float32 loss.

    Example:
        >>> s = [np.zeros((4, 8)) for _ in range(3)]   # uniform students: ln 8 against any target
        >>> t = [np.full((4, 8), 1 / 8) for _ in range(2)]
        >>> round(float(keras_ssl.losses.self_distillation(s, t)), 4)   # ln 8
        2.0794
    """
    _check_positive(student_temperature=student_temperature)
    if len(teacher_probs) > len(student_logits):
        raise ValueError(
            f"got {len(teacher_probs)} teacher crops for {len(student_logits)} student crops; "
            "the student must see every teacher crop."
        )
    student = [ops.cast(s, "float32") / student_temperature for s in student_logits]
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher_probs):
        probs = ops.stop_gradient(ops.cast(t, "float32"))
        for v, s in enumerate(student):
            if v != i:
                total += _cross_entropy(probs, s)
                pairs += 1
    if pairs == 0:
        raise ValueError("self-distillation needs at least one (teacher crop, other student crop) pair.")
    return total / pairs


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
        teacher_temperature: > 0 (about 0.04-0.07; higher is unstable); a
            Python number or a scalar tensor (a warmed-up schedule).

    Returns:
        Scalar float32 loss, the mean over pairs (teacher crop `i`, student
        crop `v != i`).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> s = [rng.normal(size=(8, 32)) for _ in range(4)]   # student: 2 global and 2 local crops
        >>> t = [rng.normal(size=(8, 32)) for _ in range(2)]   # teacher: the 2 global crops
        >>> round(float(keras_ssl.losses.dino(s, t, np.zeros(32))), 3)
        20.856
    """
    _check_positive(student_temperature=student_temperature, teacher_temperature=teacher_temperature)
    center = ops.cast(center, "float32")
    teacher_temperature = ops.cast(teacher_temperature, "float32")
    probs = [ops.softmax((ops.cast(t, "float32") - center) / teacher_temperature, axis=-1) for t in teacher_logits]
    return self_distillation(student_logits, probs, student_temperature)
