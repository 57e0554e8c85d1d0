"""Losses on soft assignments to learnable prototypes: MSN (Assran et al. 2022)."""

import math

from keras import ops

from keras_ssl.losses.clustering import sinkhorn
from keras_ssl.losses.common import _check_positive, l2_normalize


def prototype_log_probs(embeddings, prototypes, temperature=0.1, label_smoothing=0.0):
    """Log soft assignments of embeddings to prototypes, MSN's `log softmax(cos / temperature)`.

    Embeddings and prototypes are both L2-normalised, so the scores are
    cosines. With `label_smoothing` `s`, each prototype's label is the smoothed
    one-hot `(1 - s) e_k + s / K`, so the probabilities are `(1 - s) p + s / K`.

    Args:
        embeddings: `(B, D)` projections.
        prototypes: `(K, D)` prototypes (any norm).
        temperature: softmax temperature, > 0 (MSN: 0.1).
        label_smoothing: in [0, 1) (MSN: 0).

    Returns:
        `(B, K)` float32 log-probabilities.

    Example:
        >>> from keras_ssl.losses.prototypes import prototype_log_probs
        >>> z = np.random.default_rng(0).normal(size=(8, 4))
        >>> log_p = prototype_log_probs(z, np.eye(6, 4), temperature=0.1)
        >>> tuple(log_p.shape), bool(np.allclose(ops.sum(ops.exp(log_p), axis=1), 1.0, atol=1e-5))
        ((8, 6), True)
    """
    _check_positive(temperature=temperature)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing}.")
    scores = ops.matmul(l2_normalize(embeddings), ops.transpose(l2_normalize(prototypes)))
    log_p = ops.log_softmax(scores / temperature, axis=-1)
    if label_smoothing:
        # log((1 - s) p + s / K), in log space so no probability underflows to log(0).
        log_uniform = math.log(label_smoothing) - ops.log(ops.cast(ops.shape(log_p)[-1], "float32"))
        log_p = ops.logaddexp(log_p + math.log(1.0 - label_smoothing), log_uniform)
    return log_p


def me_max(log_probs):
    """ME-MAX: `log K - H(mean of the probabilities)`, 0 when the mean assignment is uniform.

    Args:
        log_probs: `(B, K)` log soft assignments (all anchor views of the batch).

    Returns:
        Scalar float32, in `[0, log K]`.

    Example:
        >>> from keras_ssl.losses.prototypes import me_max
        >>> uniform = np.log(np.full((4, 8), 1 / 8))
        >>> round(float(me_max(uniform)), 6)
        0.0
        >>> round(float(me_max(np.log(np.eye(8)[[0, 0, 0, 0]] * 0.92 + 0.01))), 4)   # all on prototype 0
        1.6896
    """
    log_probs = ops.cast(log_probs, "float32")
    n = ops.cast(ops.shape(log_probs)[0], "float32")
    k = ops.cast(ops.shape(log_probs)[1], "float32")
    log_mean = ops.logsumexp(log_probs, axis=0) - ops.log(n)
    return ops.sum(ops.exp(log_mean) * log_mean) + ops.log(k)


def msn_targets(
    embeddings, prototypes, temperature=0.1, sharpen_temperature=0.25, sinkhorn_iterations=3, label_smoothing=0.0
):
    """MSN's targets: sharpened soft assignments, optionally balanced by Sinkhorn, without gradient.

    `sharpen(p, T) = p ** (1 / T) / sum(p ** (1 / T))`, then (when
    `sinkhorn_iterations > 0`) the official `distributed_sinkhorn`: the
    sharpened matrix is scaled alternately to equal prototype and sample
    masses (`keras_ssl.losses.sinkhorn` on its logarithm with `epsilon=1`).

    Args:
        embeddings: `(B, D)` target projections.
        prototypes: `(K, D)` prototypes.
        temperature: softmax temperature, > 0.
        sharpen_temperature: `T`, > 0 (MSN: 0.25).
        sinkhorn_iterations: Sinkhorn rounds (MSN: 3); 0 turns Sinkhorn off.
        label_smoothing: in [0, 1).

    Returns:
        `(B, K)` float32 targets, rows summing to 1.

    Example:
        >>> from keras_ssl.losses.prototypes import msn_targets
        >>> z = np.random.default_rng(0).normal(size=(8, 4))
        >>> t = msn_targets(z, np.eye(6, 4))
        >>> tuple(t.shape), bool(np.allclose(ops.sum(t, axis=1), 1.0, atol=1e-5))
        ((8, 6), True)
    """
    _check_positive(sharpen_temperature=sharpen_temperature)
    log_p = prototype_log_probs(embeddings, prototypes, temperature, label_smoothing)
    log_sharp = ops.log_softmax(ops.stop_gradient(log_p) / sharpen_temperature, axis=-1)
    if sinkhorn_iterations:
        return sinkhorn(log_sharp, epsilon=1.0, iterations=sinkhorn_iterations)
    return ops.stop_gradient(ops.exp(log_sharp))


def msn(
    anchors,
    targets,
    prototypes,
    temperature=0.1,
    sharpen_temperature=0.25,
    sinkhorn_iterations=3,
    label_smoothing=0.0,
):
    """MSN's loss terms: cross-entropy of the anchors against the targets, and ME-MAX.

    Each anchor view is predicted from the target of its image: the anchors'
    soft assignments `p = softmax(cos(anchor, prototypes) / temperature)`
    are trained towards `msn_targets(targets)`; ME-MAX is taken on the mean
    of `p` over every anchor view. The official loss is
    `cross_entropy + me_max_weight * me_max` (weight 1).

    Args:
        anchors: list of `(B, D)` anchor projections, one per anchor view.
        targets: `(B, D)` target projections (no gradient flows into them).
        prototypes: `(K, D)` learnable prototypes.
        temperature, sharpen_temperature, sinkhorn_iterations, label_smoothing:
            as in `msn_targets`.

    Returns:
        `(cross_entropy, me_max)`, two float32 scalars.

    Example:
        >>> from keras_ssl.losses.prototypes import msn
        >>> rng = np.random.default_rng(0)
        >>> anchors = [rng.normal(size=(8, 4)) for _ in range(3)]
        >>> ce, reg = msn(anchors, rng.normal(size=(8, 4)), rng.normal(size=(6, 4)))
        >>> round(float(ce), 3), round(float(reg), 3)
        (5.918, 0.106)
    """
    if not anchors:
        raise ValueError("`anchors` needs at least one anchor view.")
    t = msn_targets(targets, prototypes, temperature, sharpen_temperature, sinkhorn_iterations, label_smoothing)
    log_p = prototype_log_probs(ops.concatenate(list(anchors), axis=0), prototypes, temperature, label_smoothing)
    # Anchors are view-major, so the targets repeat once per view.
    t = ops.concatenate([t] * len(anchors), axis=0)
    cross_entropy = -ops.mean(ops.sum(t * log_p, axis=-1))
    return cross_entropy, me_max(log_p)
