"""Conv2D with a faster convolution where the backend's own is slow."""

import keras

from keras_ssl import backend


@keras.saving.register_keras_serializable(package="keras_ssl")
class Conv2D(keras.layers.Conv2D):
    """Keras's `Conv2D`, computed on the JAX CPU backend by chunked matmuls.

    Same arguments, weights, config and numbers (to float32 rounding) as
    `keras.layers.Conv2D`. XLA:CPU's convolution backward transposes every
    activation first; `backend.fast_conv` computes the same convolution
    and exact gradient as matmuls over a few images at a time (1x1 and 3x3
    kernels, channels-last, one CPU device), 1.4-1.6x a ResNet's
    forward+backward. Elsewhere it is Keras's layer. `backbones.plain_keras`
    turns it into Keras's own.

    Args:
        **kwargs: those of `keras.layers.Conv2D`.

    Example:
        >>> conv = keras_ssl.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)
        >>> y = conv(images)
        >>> tuple(y.shape)
        (8, 8, 8, 8)
        >>> bool(ops.all(ops.isclose(y, ops.conv(images, conv.kernel, strides=2, padding="same"), atol=1e-4)))
        True
    """

    def convolution_op(self, inputs, kernel):
        fast = (
            None
            if self.groups != 1
            else backend.fast_conv(
                inputs,
                keras.ops.convert_to_tensor(kernel),
                self.strides,
                self.padding,
                self.data_format,
                self.dilation_rate,
            )
        )
        return super().convolution_op(inputs, kernel) if fast is None else fast
