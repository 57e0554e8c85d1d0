"""Batch normalisation by the backend's own fused kernel (PyTorch `batch_norm`, TF `FusedBatchNormV3`)."""

from keras_ssl.backend.probes import backend


def fused_batch_norm(x, scale, offset, axis, epsilon):
    """Training-mode batch norm by the backend's fused kernel, or None where there is none.

    Normalises `x` over every axis but `axis` with the batch's statistics,
    as `keras.ops.batch_normalization(x, mean, variance, ...)` after
    `keras.ops.moments`, in one kernel whose gradient is the exact one:
    PyTorch's `batch_norm` (any axis, moved to dimension 1 as a view, so a
    channels-last memory format is kept) and TensorFlow's
    `FusedBatchNormV3` (float32, channels-last 4-D or 2-D inputs). None on
    JAX (XLA fuses Keras's ops itself) and for other cases, where the
    caller takes Keras's path.

    Args:
        x: the activations, float.
        scale, offset: `(C,)` tensors, or None for 1 and 0.
        axis: the channel axis of `x`.
        epsilon: added to the variance.

    Returns:
        `(outputs, mean, variance)`, the variance biased (divided by the
        number of values per channel, as `keras.ops.moments`), or None.

    Example:
        >>> x = ops.convert_to_tensor(np.random.default_rng(0).normal(size=(8, 4)), "float32")
        >>> gamma, beta = ops.ones((4,)), ops.zeros((4,))
        >>> out = keras_ssl.backend.fused_batch_norm(x, gamma, beta, axis=-1, epsilon=1e-5)
        >>> out is None   # on JAX; (outputs, mean, variance) on TensorFlow and PyTorch
        True
        >>> if out is None:   # Keras's path
        ...     mean, variance = ops.moments(x, axes=[0])
        ...     out = ops.batch_normalization(x, mean, variance, -1, beta, gamma, 1e-5), mean, variance
        >>> [tuple(t.shape) for t in out]
        [(8, 4), (4,), (4,)]
    """
    kind = backend()
    if kind == "torch":
        import torch
        import torch.nn.functional as F

        axis = axis % x.ndim
        count = x.numel() // x.shape[axis]
        if count < 2:  # PyTorch refuses a single value per channel; Keras gives variance 0
            return None
        moved = torch.movedim(x, axis, 1)
        # momentum 1 makes the "running" buffers the batch's mean and unbiased variance.
        mean = torch.zeros(moved.shape[1], dtype=x.dtype, device=x.device)
        variance = torch.zeros_like(mean)
        outputs = F.batch_norm(moved, mean, variance, scale, offset, training=True, momentum=1.0, eps=epsilon)
        return torch.movedim(outputs, 1, axis), mean, variance * ((count - 1) / count)
    if kind == "tensorflow":
        import tensorflow as tf

        rank = x.shape.rank
        axis = axis % rank
        if x.dtype != tf.float32 or axis != rank - 1 or rank not in (2, 4):
            return None
        channels = x.shape[-1]
        flat = x if rank == 4 else tf.reshape(x, (-1, 1, 1, channels))
        scale = tf.ones((channels,), x.dtype) if scale is None else scale
        offset = tf.zeros((channels,), x.dtype) if offset is None else offset
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            flat, scale, offset, epsilon=epsilon, data_format="NHWC", is_training=True
        )
        # FusedBatchNormV3 returns the unbiased variance (for its running average).
        count = tf.cast(tf.size(x) // channels, x.dtype)
        variance = variance * tf.maximum(count - 1, 0.0) / count
        return (outputs if rank == 4 else tf.reshape(outputs, tf.shape(x))), mean, variance
    return None
