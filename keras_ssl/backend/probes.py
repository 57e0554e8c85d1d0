"""Which backend, which device: what the rest of keras_ssl asks instead of branching on the backend itself."""

import keras


def backend():
    """The active Keras backend name ("tensorflow", "jax" or "torch")."""
    return keras.backend.backend()


def accelerator():
    """The kind of device the backend computes on: `"cpu"`, `"gpu"` or `"tpu"`.

    Example:
        >>> keras_ssl.backend.accelerator()   # on a machine without GPUs
        'cpu'
    """
    name = backend()
    if name == "jax":
        import jax

        return {"cuda": "gpu", "rocm": "gpu"}.get(jax.default_backend(), jax.default_backend())
    if name == "tensorflow":
        import tensorflow as tf

        for kind in ("TPU", "GPU"):
            if tf.config.list_logical_devices(kind):
                return kind.lower()
        return "cpu"
    if name == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def conv_layout():
    """The layout keras_ssl's conv backbones compute in on this backend.

    On PyTorch, Keras's channels-last convolution copies its input to
    channels-first and then to channels-last memory, and its output back
    (27 % of a ResNet step, profiled); a channels-first graph fed one
    transposed view of the `(B, H, W, C)` images is already in PyTorch's
    channels-last memory format, which every convolution, BatchNorm and
    addition keeps, so nothing is copied. TensorFlow and JAX compute in
    channels-last.

    Example:
        >>> keras_ssl.backend.conv_layout()   # JAX and TensorFlow; "channels_first" on PyTorch
        'channels_last'
        >>> conv = keras.layers.Conv2D(8, 3, data_format=keras_ssl.backend.conv_layout())
        >>> tuple(conv(images).shape)
        (8, 14, 14, 8)
    """
    return "channels_first" if backend() == "torch" else "channels_last"
