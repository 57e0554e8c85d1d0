"""Joint-embedding predictive losses: I-JEPA's regression of target-encoder features."""

from keras import ops

from keras_ssl.losses.common import _check_rank


def ijepa(predictions, target_tokens, target_ids, target_valid=None, loss="smooth_l1", eps=1e-5):
    """I-JEPA's loss: predicted features against the target encoder's, at each target block.

    The target tokens are layer-normed over the feature axis (no affine, `torch.layer_norm`'s
    `eps`), taken at the target blocks' patches, and compared elementwise with the
    predictions: `"smooth_l1"` (the official code, `beta` 1) or `"l2"` (the paper's squared
    distance, per element). The mean runs over the valid patches of every block and the
    features. The caller stops the target's gradient.

    Args:
        predictions: `(B, M, K, D)` predictor outputs, `M` blocks of `K` (padded) patches.
        target_tokens: `(B, N, D)` patch tokens of the target encoder on the whole image.
        target_ids: `(B, M, K)` int patch indices of each block.
        target_valid: `(B, M, K)` bool, the real (not padding) entries; default: all.
        loss: `"smooth_l1"` or `"l2"`.
        eps: layer-norm epsilon.

    Example:
        >>> from keras_ssl.losses.predictive import ijepa
        >>> target = keras.random.normal((2, 16, 8), seed=0)
        >>> ids = ops.tile(ops.arange(4)[None, None], (2, 3, 1))   # 3 blocks of patches 0-3
        >>> pred = keras.random.normal((2, 3, 4, 8), seed=1)
        >>> float(ijepa(pred, target, ids)) > 0
        True
    """
    if loss not in ("smooth_l1", "l2"):
        raise ValueError(f"`loss` must be 'smooth_l1' or 'l2', got {loss!r}.")
    _check_rank("predictions", predictions, 4)
    _check_rank("target_tokens", target_tokens, 3)
    predictions = ops.cast(predictions, "float32")
    target_tokens = ops.cast(target_tokens, "float32")
    mean = ops.mean(target_tokens, axis=-1, keepdims=True)
    var = ops.mean(ops.square(target_tokens - mean), axis=-1, keepdims=True)
    normed = (target_tokens - mean) / ops.sqrt(var + eps)
    blocks, size, dim = predictions.shape[1], predictions.shape[2], predictions.shape[3]
    ids = ops.reshape(ops.cast(target_ids, "int32"), (-1, blocks * size, 1))
    targets = ops.take_along_axis(normed, ops.broadcast_to(ids, (ops.shape(ids)[0], blocks * size, dim)), axis=1)
    diff = predictions - ops.reshape(targets, (-1, blocks, size, dim))
    if loss == "smooth_l1":
        error = ops.where(ops.abs(diff) < 1.0, 0.5 * ops.square(diff), ops.abs(diff) - 0.5)
    else:
        error = ops.square(diff)
    if target_valid is None:
        return ops.mean(error)
    weight = ops.cast(target_valid, "float32")[..., None]
    return ops.sum(error * weight) / (ops.maximum(ops.sum(weight), 1.0) * dim)
