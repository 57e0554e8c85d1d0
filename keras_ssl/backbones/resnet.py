"""ResNet backbones (He et al. 2016) with CIFAR and ImageNet stems.

Built from Keras layers and keras_ssl's `BatchNormalization` and `Conv2D`
(Keras's, computed by faster kernels where the backend has them), so a saved encoder loads with
`keras.saving.load_model` on any backend once keras_ssl is imported, and
`plain_keras(encoder)` is the same model of Keras layers only, for files
that load without it. Each model maps images in [0, 1], `(B, H, W, C)`,
to pooled features `(B, D)`.
Inside, the convolutions compute in the layout the backend runs fastest
(`backend.conv_layout`): on PyTorch one transposed view of the images
makes every convolution run in PyTorch's channels-last memory format with
no copies; the numbers are the same in either layout.
"""

import keras

from keras_ssl import backend, initializers
from keras_ssl.layers.conv import Conv2D
from keras_ssl.layers.normalization import BatchNormalization

layers = keras.layers

_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def _conv(x, filters, kernel, strides, name, data_format, init, gamma="ones"):
    x = Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=False,
        data_format=data_format,
        kernel_initializer=initializers.kernel(init, "conv"),
        name=f"{name}_conv",
    )(x)
    # momentum 0.9 = PyTorch's 0.1, as the reference implementations: Keras's 0.99
    # leaves the moving statistics far from the batch ones after short runs.
    bn = BatchNormalization(
        axis=_channel_axis(data_format), momentum=0.9, epsilon=1e-5, gamma_initializer=gamma, name=f"{name}_bn"
    )
    return bn(x)


def _channel_axis(data_format):
    return 1 if data_format == "channels_first" else -1


def _basic_block(x, filters, strides, name, data_format, init, last_gamma):
    shortcut = x
    y = layers.ReLU(name=f"{name}_relu1")(_conv(x, filters, 3, strides, f"{name}_1", data_format, init))
    y = _conv(y, filters, 3, 1, f"{name}_2", data_format, init, last_gamma)
    if strides != 1 or x.shape[_channel_axis(data_format)] != filters:
        shortcut = _conv(x, filters, 1, strides, f"{name}_proj", data_format, init)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def _bottleneck(x, filters, strides, name, data_format, init, last_gamma):
    shortcut = x
    y = layers.ReLU(name=f"{name}_relu1")(_conv(x, filters, 1, 1, f"{name}_1", data_format, init))
    y = layers.ReLU(name=f"{name}_relu2")(_conv(y, filters, 3, strides, f"{name}_2", data_format, init))
    y = _conv(y, 4 * filters, 1, 1, f"{name}_3", data_format, init, last_gamma)
    if strides != 1 or x.shape[_channel_axis(data_format)] != 4 * filters:
        shortcut = _conv(x, 4 * filters, 1, strides, f"{name}_proj", data_format, init)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def _layout(inputs, data_format):
    """The images `(B, H, W, C)` as the convolutions take them."""
    data_format = data_format or backend.conv_layout()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"`data_format` must be 'channels_last' or 'channels_first', got {data_format!r}.")
    if data_format == "channels_last":
        return inputs, data_format
    return layers.Permute((3, 1, 2), name="to_channels_first")(inputs), data_format


def resnet(
    depth=18,
    input_shape=(32, 32, 3),
    stem="cifar",
    width=1.0,
    name=None,
    data_format=None,
    initializer="torchvision",
    zero_init_residual=False,
):
    """A ResNet encoder returning globally pooled features.

    Args:
        depth: 18, 34 (basic blocks) or 50 (bottleneck blocks).
        input_shape: `(H, W, C)` of the images.
        stem: `"cifar"` (3x3 conv, stride 1, no max-pool: for 32x32 images)
            or `"imagenet"` (7x7 conv stride 2 and a 3x3 max-pool).
        width: width multiplier of every stage (base widths 64-128-256-512);
            the stem keeps at least 16 channels (see the comment in the code).
        name: model name (default `resnet{depth}`).
        data_format: layout the convolutions compute in (the images stay
            `(B, H, W, C)`): "channels_last", "channels_first", or None for
            the backend's fastest (`backend.conv_layout`).
        initializer: the convolutions' kernel initialisation: "torchvision"
            (torchvision's ResNet: Kaiming-normal, fan-out; the ResNet of
            MoCo's, SimSiam's, Barlow Twins', VICReg's, SwAV's and DINO's
            official code), "keras" (He-normal, truncated, fan-in), "torch"
            (PyTorch's `nn.Conv2d` default, `U(+-1/sqrt(fan_in))`, std 2.4x
            smaller), "simclr" (SimCLR's TensorFlow ResNet; with
            `zero_init_residual=True`, as its code), "haiku" (BYOL's), or a
            Keras initialiser (see `keras_ssl.initializers`). BatchNorm
            starts at gamma 1, beta 0 in every case.
        zero_init_residual: gamma 0 in the last BatchNorm of each residual
            branch, so each block starts as the identity (torchvision's
            `zero_init_residual`, Goyal et al. 2017).

    Returns:
        A functional `keras.Model`; features have `512 * width` channels
        (`2048 * width` for ResNet-50).

    Example:
        >>> encoder = keras_ssl.backbones.resnet(18, input_shape=(16, 16, 3), stem="cifar", width=0.25)
        >>> encoder.output_shape   # (B, 512 * width)
        (None, 128)
        >>> torch_like = keras_ssl.backbones.resnet(18, (16, 16, 3), width=0.25, initializer="torch")
        >>> fan_in = 3 * 3 * 3   # the stem: 3x3 kernel, 3 channels
        >>> bool(ops.max(ops.abs(torch_like.get_layer("stem_conv").kernel)) <= fan_in**-0.5)
        True
    """
    initializers.check(initializer)
    if depth not in _BLOCKS:
        raise ValueError(f"`depth` must be one of {sorted(_BLOCKS)}, got {depth}.")
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"`stem` must be 'cifar' or 'imagenet', got {stem!r}.")
    if not width > 0:
        raise ValueError(f"`width` must be > 0, got {width}.")
    if len(input_shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels), got {input_shape}.")
    block = _bottleneck if depth == 50 else _basic_block
    # At least 16 stem channels: a 1x1 stride-2 convolution with fewer than
    # 16 input channels on maps of 56 px or more crashes oneDNN (TensorFlow
    # and PyTorch on CPU abort with a segfault), which widths below 0.25
    # would put in every projection shortcut.
    base = max(16, int(round(64 * width)))
    inputs = keras.Input(input_shape, name="images")
    x, data_format = _layout(inputs, data_format)
    if stem == "cifar":
        x = layers.ReLU(name="stem_relu")(_conv(x, base, 3, 1, "stem", data_format, initializer))
    else:
        x = layers.ReLU(name="stem_relu")(_conv(x, base, 7, 2, "stem", data_format, initializer))
        x = layers.MaxPooling2D(3, strides=2, padding="same", data_format=data_format, name="stem_pool")(x)
    last_gamma = "zeros" if zero_init_residual else "ones"
    for stage, blocks in enumerate(_BLOCKS[depth]):
        for i in range(blocks):
            strides = 2 if stage > 0 and i == 0 else 1
            x = block(
                x, base * 2**stage, strides, f"stage{stage + 1}_block{i + 1}", data_format, initializer, last_gamma
            )
    x = layers.GlobalAveragePooling2D(data_format=data_format, name="pool")(x)
    return keras.Model(inputs, x, name=name or f"resnet{depth}")


def resnet18(
    input_shape=(32, 32, 3),
    stem="cifar",
    width=1.0,
    name=None,
    data_format=None,
    initializer="torchvision",
    zero_init_residual=False,
):
    """ResNet-18 encoder; see `resnet`.

    Example:
        >>> encoder = keras_ssl.backbones.resnet18(input_shape=(16, 16, 3), width=0.25)
        >>> encoder.name, encoder.output_shape
        ('resnet18', (None, 128))
    """
    return resnet(18, input_shape, stem, width, name, data_format, initializer, zero_init_residual)


def resnet34(
    input_shape=(32, 32, 3),
    stem="cifar",
    width=1.0,
    name=None,
    data_format=None,
    initializer="torchvision",
    zero_init_residual=False,
):
    """ResNet-34 encoder; see `resnet`.

    Example:
        >>> encoder = keras_ssl.backbones.resnet34(input_shape=(16, 16, 3), width=0.25)
        >>> encoder.name, encoder.output_shape
        ('resnet34', (None, 128))
    """
    return resnet(34, input_shape, stem, width, name, data_format, initializer, zero_init_residual)


def resnet50(
    input_shape=(224, 224, 3),
    stem="imagenet",
    width=1.0,
    name=None,
    data_format=None,
    initializer="torchvision",
    zero_init_residual=False,
):
    """ResNet-50 encoder (bottleneck blocks); see `resnet`.

    Example:
        >>> encoder = keras_ssl.backbones.resnet50(input_shape=(64, 64, 3), width=0.25)
        >>> encoder.name, encoder.output_shape   # 2048 * width features
        ('resnet50', (None, 512))
    """
    return resnet(50, input_shape, stem, width, name, data_format, initializer, zero_init_residual)


def tiny_encoder(input_shape=(32, 32, 3), width=32, name="tiny_encoder", data_format=None, initializer="keras"):
    """A small 4-conv encoder for tests, demos and CPU-budget runs.

    Conv-BN-ReLU blocks of widths `w, 2w, 4w, 4w` (strides 1, 2, 2, 2), then
    global average pooling: `4 * width` features.

    Args:
        input_shape: `(H, W, C)` of the images.
        width: base number of filters.
        name: model name.
        data_format: as for `resnet`.
        initializer: as for `resnet`.

    Example:
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=16)
        >>> tuple(encoder(images).shape)   # (B, 4 * width)
        (8, 64)
    """
    if len(input_shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels), got {input_shape}.")
    initializers.check(initializer)
    inputs = keras.Input(input_shape, name="images")
    x, data_format = _layout(inputs, data_format)
    for i, (mult, strides) in enumerate(((1, 1), (2, 2), (4, 2), (4, 2))):
        conv = _conv(x, width * mult, 3, strides, f"block{i + 1}", data_format, initializer)
        x = layers.ReLU(name=f"block{i + 1}_relu")(conv)
    x = layers.GlobalAveragePooling2D(data_format=data_format, name="pool")(x)
    return keras.Model(inputs, x, name=name)
