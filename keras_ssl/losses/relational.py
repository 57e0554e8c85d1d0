"""Relational losses: ReSSL's agreement of similarity distributions over a queue."""

from keras import ops

from keras_ssl.losses.common import _check_positive, _check_rank, l2_normalize


def ressl(student, teacher, queue, student_temperature=0.1, teacher_temperature=0.04):
    """ReSSL's relational loss: the student matches the teacher's similarities to a queue.

    Each row's cosine similarities to the `K` queue rows become a
    distribution: the teacher's sharpened, `softmax(sim_t / teacher_temperature)`
    (no gradient), is the target of the student's
    `log_softmax(sim_s / student_temperature)`; the loss is their
    cross-entropy, averaged over the rows. The queue alone is the support
    (the official code reads it before the batch's teacher keys enter it),
    and the loss is not symmetrised. All rows are L2-normalised.

    Args:
        student: `(B, D)` student projections (the strongly augmented view).
        teacher: `(B, D)` teacher projections (the weakly augmented view),
            row `i` of the same image as `student[i]`; no gradient flows.
        queue: `(K, D)` past teacher projections; no gradient flows.
        student_temperature: the student's softmax temperature, > 0 (paper: 0.1).
        teacher_temperature: the teacher's, > 0 and below the student's to
            sharpen the target (paper: 0.04).

    Returns:
        Scalar float32 loss.

    Example:
        >>> from keras_ssl.losses.relational import ressl
        >>> rng = np.random.default_rng(0)
        >>> student, teacher, queue = rng.normal(size=(8, 16)), rng.normal(size=(8, 16)), rng.normal(size=(32, 16))
        >>> round(float(ressl(student, teacher, queue)), 2)
        5.66
        >>> round(float(ressl(teacher, teacher, queue)), 2)   # the same view: lower
        1.14
    """
    _check_positive(student_temperature=student_temperature, teacher_temperature=teacher_temperature)
    student, teacher, queue = (ops.cast(x, "float32") for x in (student, teacher, queue))
    for name, x in (("student", student), ("teacher", teacher), ("queue", queue)):
        _check_rank(name, x, 2)
    widths = {ops.shape(x)[1] for x in (student, teacher, queue)}
    if len(widths) > 1:
        raise ValueError(
            "`student`, `teacher` and `queue` must have the same width, got shapes "
            f"{ops.shape(student)}, {ops.shape(teacher)} and {ops.shape(queue)}."
        )
    # The queue is state, not a parameter: as the official code's detached copy, it takes no gradient.
    support = ops.stop_gradient(ops.transpose(l2_normalize(queue)))
    student_logits = ops.matmul(l2_normalize(student), support) / student_temperature
    teacher_logits = ops.matmul(l2_normalize(ops.stop_gradient(teacher)), support) / teacher_temperature
    target = ops.softmax(teacher_logits, axis=1)
    log_prob = student_logits - ops.logsumexp(student_logits, axis=1, keepdims=True)
    return -ops.mean(ops.sum(target * log_prob, axis=1))
