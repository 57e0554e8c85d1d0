"""BatchNormalization trained with the backend's fused kernel, split (shuffle) BatchNorm on one device, and
BatchNorm synchronised across replicas (`synchronize_batch_norm`)."""

import types

import keras
from keras import ops

from keras_ssl import backend, keras_compat
from keras_ssl.backend import replication


@keras.saving.register_keras_serializable(package="keras_ssl")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras's `BatchNormalization`, computed in training by one fused kernel.

    Same arguments, weights, config and numbers (to float32 rounding) as
    `keras.layers.BatchNormalization`. In training, Keras composes the
    statistics and the normalisation from separate elementwise ops (on
    PyTorch eight passes over the activations forward and as many
    backward, 45 % of a ResNet-18 x0.25 step); this layer calls the
    backend's own batch-norm kernel where there is one
    (`backend.fused_batch_norm`: PyTorch's `batch_norm`, TensorFlow's
    `FusedBatchNormV3`), which computes the same function and its exact
    gradient, and updates the moving statistics as Keras does (biased
    batch variance). JAX, masks, `renorm` and `synchronized` use Keras's
    path (XLA fuses it there). `backbones.plain_keras` turns a model's
    layers of this class into Keras's own, for files that load without
    keras_ssl.

    Args:
        **kwargs: those of `keras.layers.BatchNormalization`.

    Example:
        >>> bn = keras_ssl.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
        >>> features = 3 * keras.random.normal((8, 16), seed=0) + 2
        >>> y = bn(features, training=True)   # normalised with the batch's statistics
        >>> round(float(ops.max(ops.abs(ops.mean(y, axis=0)))), 4), round(float(ops.mean(ops.std(y, axis=0))), 3)
        (0.0, 1.0)
        >>> keras_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
        >>> bool(ops.all(ops.isclose(y, keras_bn(features, training=True), atol=1e-5)))   # Keras's numbers
        True
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None or self.renorm or self.synchronized:
            return super().call(inputs, training=training, mask=mask)
        # Keras computes the statistics in float32 under mixed precision: so do we.
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        gamma = ops.cast(self.gamma, x.dtype) if self.scale else None
        beta = ops.cast(self.beta, x.dtype) if self.center else None
        fused = backend.fused_batch_norm(x, gamma, beta, self.axis, self.epsilon)
        if fused is None:
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = fused
        mean, variance = ops.stop_gradient(mean), ops.stop_gradient(variance)
        self.moving_mean.assign(ops.cast(self.moving_mean, x.dtype) * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            ops.cast(self.moving_variance, x.dtype) * self.momentum + variance * (1.0 - self.momentum)
        )
        return ops.cast(outputs, self.compute_dtype)


def split_batch(fn, x, num_splits, interleave=False):
    """`fn` run on `num_splits` sub-batches of `x`, its outputs back in `x`'s row order.

    A network with BatchNorm run this way normalises each sub-batch with its
    own statistics: MoCo's shuffle-BN on one device. Sub-batches are
    contiguous blocks of rows, or, with `interleave`, the rows `i` with
    `i % num_splits == g`, so that a contiguous and an interleaved split of
    the same batch share only `1 / num_splits` of their rows (as a random
    shuffle does on average). The interleave is fixed, so it needs no seed
    and a resumed run repeats it exactly.

    Args:
        fn: maps a `(b, ...)` tensor to a `(b, ...)` tensor.
        x: a `(B, ...)` tensor, `B` divisible by `num_splits`.
        num_splits: number of sub-batches.
        interleave: interleaved rows instead of contiguous blocks.

    Example:
        >>> from keras_ssl.layers.normalization import split_batch
        >>> x = ops.reshape(ops.arange(8, dtype="float32"), (8, 1))
        >>> centred = split_batch(lambda b: b - ops.mean(b), x, 2, interleave=True)  # per sub-batch mean
        >>> ops.convert_to_numpy(centred)[:, 0].tolist()
        [-3.0, -3.0, -1.0, -1.0, 1.0, 1.0, 3.0, 3.0]
    """
    if x.shape[0] is not None and x.shape[0] % num_splits:
        raise ValueError(f"split_batch needs a batch size divisible by num_splits={num_splits}, got {x.shape[0]}.")
    if not interleave:
        return ops.concatenate([fn(chunk) for chunk in ops.split(x, num_splits, axis=0)], axis=0)
    # Sub-batch g holds the rows i with i % num_splits == g.
    position = ops.arange(ops.shape(x)[0])
    size = ops.shape(x)[0] // num_splits
    order = (position % size) * num_splits + position // size
    out = ops.concatenate([fn(chunk) for chunk in ops.split(ops.take(x, order, axis=0), num_splits, axis=0)], axis=0)
    return ops.take(out, ops.argsort(order), axis=0)


def synchronize_batch_norm(model, enabled=True):
    """Makes every BatchNormalization layer in `model` train on the statistics of the global batch (opt-in).

    By default BatchNorm's statistics stay per replica (per process on
    PyTorch, per replica under TensorFlow's strategies), as in Keras. This
    switch works on any model, the user's own backbone included: every
    `keras.layers.BatchNormalization` under `model` (keras_ssl's too) changes.
    What it does on each backend (`backend.replication.batch_norm_sync()`):

    - JAX (`data_parallel`, one or many processes): nothing; the jitted step
      sees the global batch, so the statistics are already global
      (tests/test_multiprocess_jax.py compares BatchNorm models with one process).
    - TensorFlow: not available (NotImplementedError). Inside an SSL step,
      which also gathers its outputs, Keras's `synchronized=True` aborts
      with "Shape mismatch in the collective instance": the replicas run
      their collectives in different orders (measured under
      `MirroredStrategy` on 2 CPU devices; plain Keras models are not affected).
    - PyTorch processes: each layer all-gathers every process's batch mean
      and variance (one small collective per layer and step, as
      `torch.nn.SyncBatchNorm`) and combines them: the mean of the means, and
      the mean of the variances plus the variance of the means (the
      processes' batches are equal). The gather's backward sums the gradient
      over the processes, so the step equals one process's on the global
      batch. It is not saved: call it again after loading a model.

    Call it on every process, on the SSL model once it is constructed (its
    target networks are copies made then), before `fit`. With one replica
    it changes no number.

    Args:
        model: a Keras layer or model.
        enabled: False turns it back off.

    Returns:
        `model`.

    Raises:
        NotImplementedError: on TensorFlow (see above).
        ValueError: on PyTorch, for a layer with `renorm` (not synchronised here).

    Example:
        >>> model = keras_ssl.SimCLR(encoder, projection_dim=8, hidden_dim=16)
        >>> model = keras_ssl.layers.synchronize_batch_norm(model)
        >>> norms = [l for l in keras_ssl.keras_compat.sublayers(model) if isinstance(l, keras.layers.BatchNormalization)]
        >>> len(norms) > 0, all(l.sync_batch_norm for l in norms)
        (True, True)
    """
    mode = replication.batch_norm_sync()
    if mode == "unavailable" and enabled:
        raise NotImplementedError(
            "synchronised BatchNorm is not available on TensorFlow: inside an SSL step, which also gathers its "
            "outputs, the replicas' collectives run in different orders and abort. Use JAX (`data_parallel` "
            "normalises over the global batch) or PyTorch processes."
        )
    norms = [l for l in keras_compat.sublayers(model) if isinstance(l, keras.layers.BatchNormalization)]
    if mode == "gather" and enabled:
        renormed = [l.name for l in norms if l.renorm]
        if renormed:
            raise ValueError(f"synchronised BatchNorm with renorm=True is not available on PyTorch: {renormed}.")
    for layer in norms:
        layer.sync_batch_norm = bool(enabled)
        if mode == "gather" and enabled:
            # The instance's own `call` (public API) so any subclass keeps its class, config and file format.
            layer.call = types.MethodType(_synchronized_call, layer)
        elif mode == "gather" and "call" in vars(layer):
            del layer.call
    return model


def _synchronized_call(self, inputs, training=None, mask=None):
    """`BatchNormalization.call` with the training statistics of every process's batch (PyTorch processes)."""
    if not (training and self.trainable) or replication.num_replicas() == 1:
        return type(self).call(self, inputs, training=training, mask=mask)
    if mask is not None:
        raise NotImplementedError(f"{self.name}: synchronised BatchNorm does not take a mask.")
    x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
    axes = [i for i in range(len(x.shape)) if i != self.axis % len(x.shape)]
    local = ops.expand_dims(ops.stack(ops.moments(x, axes)), 0)  # (1, 2, channels)
    every = replication.gather(local)  # (processes, 2, channels); backward: summed over the processes
    means, variances = every[:, 0], every[:, 1]
    mean = ops.mean(means, axis=0)
    variance = ops.mean(variances + ops.square(means - mean), axis=0)
    momentum = self.momentum
    for moving, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
        moving.assign(ops.cast(moving, x.dtype) * momentum + ops.stop_gradient(value) * (1.0 - momentum))
    gamma = ops.cast(self.gamma, x.dtype) if self.scale else None
    beta = ops.cast(self.beta, x.dtype) if self.center else None
    outputs = ops.batch_normalization(x, mean, variance, axis=self.axis, offset=beta, scale=gamma, epsilon=self.epsilon)
    return ops.cast(outputs, self.compute_dtype)
