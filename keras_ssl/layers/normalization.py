"""BatchNormalization trained with the backend's fused kernel."""

import keras
from keras import ops

from keras_ssl import backend


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
