"""Backbones users already have: `keras.applications` and keras-hub.

Every encoder keras_ssl trains takes images in [0, 1]. These wrappers put
each architecture's own input scaling in front of it, so a model trained
on ImageNet with caffe-style BGR means, [-1, 1] inputs or a built-in
`Rescaling(1/255)` sees the pixels it expects. The wrapped encoder is a
functional `keras.Model` made of plain Keras layers (plus keras-hub's, for
keras-hub backbones), so it saves and loads without keras_ssl.
"""

import importlib
import os
import warnings

import keras
import numpy as np

from keras_ssl import keras_compat
from keras_ssl.backbones.hub_vit import HubViT

layers = keras.layers

# Short names (the CLI's --backbone) of the keras.applications classes.
ALIASES = {
    "resnet50_keras": "ResNet50",
    "resnet50_v2": "ResNet50V2",
    "mobilenet_v2": "MobileNetV2",
    "mobilenet_v3_small": "MobileNetV3Small",
    "mobilenet_v3_large": "MobileNetV3Large",
    "efficientnet_b0": "EfficientNetB0",
    "efficientnet_b1": "EfficientNetB1",
    "efficientnet_v2_b0": "EfficientNetV2B0",
    "convnext_tiny": "ConvNeXtTiny",
    "convnext_small": "ConvNeXtSmall",
    "densenet121": "DenseNet121",
}


def application_names():
    """Every `keras.applications` class name `application` accepts.

    Example:
        >>> names = keras_ssl.backbones.application_names()
        >>> "MobileNetV3Small" in names, "ResNet50" in names, "resnet50" in names
        (True, True, False)
    """
    return sorted(n for n in dir(keras.applications) if n[:1].isupper())


def application(name, input_shape=(224, 224, 3), weights=None, name_prefix=None):
    """A `keras.applications` architecture as a keras_ssl encoder.

    The architecture's classifier is dropped (`include_top=False`), its
    features are average-pooled to `(B, D)`, and the input scaling it was
    trained with is put in front of it, derived from Keras's own
    `keras.applications.<family>.preprocess_input`: ResNet50/VGG get
    caffe-style BGR mean subtraction, MobileNetV2/ResNet50V2/Inception get
    [-1, 1], DenseNet gets ImageNet mean/std, and EfficientNet, MobileNetV3
    and ConvNeXt (whose models scale their own input) get 0-255.
    Grayscale images are repeated to three channels.

    Args:
        name: a `keras.applications` class name (`"ResNet50"`,
            `"MobileNetV3Small"`, `"EfficientNetB0"`, `"ConvNeXtTiny"`...)
            or a short name of `ALIASES` (`"mobilenet_v3_small"`).
        input_shape: `(H, W, C)`; H and W may be None for any size.
        weights: None (random init), a local weights file of the
            architecture without its top, or `"imagenet"` (downloads).
        name_prefix: name of the returned model (default: the class name).

    Returns:
        A functional `keras.Model` mapping [0, 1] images to `(B, D)`.

    Example:
        >>> encoder = keras_ssl.backbones.application("VGG16", input_shape=(32, 32, 3))
        >>> encoder.name, encoder.output_shape
        ('VGG16', (None, 512))
        >>> type(encoder.get_layer("input_scaling")).__name__   # caffe-style BGR: a frozen 1x1 conv
        'Conv2D'
    """
    cls_name = ALIASES.get(name, name)
    constructor = getattr(keras.applications, cls_name, None)
    if constructor is None or not cls_name[:1].isupper():
        raise ValueError(
            f"unknown keras.applications model {name!r}; use one of {application_names()} or {sorted(ALIASES)}."
        )
    if weights not in (None, "imagenet") and not os.path.isfile(str(weights)):
        raise ValueError(f"`weights` must be None, 'imagenet' or a weights file; {weights!r} does not exist.")
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ValueError(f"keras.applications models take (H, W, 1 or 3) images, got input_shape={input_shape}.")
    inputs = keras.Input(tuple(input_shape), name="images")
    x = inputs
    if input_shape[-1] == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = _input_scaling(cls_name)(x)
    # Built on our input tensor, not nested: one flat graph, which copies
    # (momentum targets) where a nested MobileNetV3 does not (Keras 3.15).
    base = constructor(include_top=False, weights=weights, input_tensor=x, pooling="avg")
    return keras.Model(inputs, base.output, name=name_prefix or cls_name)


def rescales_0_255(encoder):
    """Whether `encoder` starts by rescaling 0-255 pixels itself (then [0, 1] inputs are wrong).

    True when the first `Rescaling` layer it holds divides by about 255
    or 127.5, as bare `keras.applications` EfficientNet and MobileNetV3
    models do, or its first `Normalization` subtracts a mean given in 0-255
    pixels, as ConvNeXt does; `application` puts a x255 scaling in front of them.

    Example:
        >>> bare = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255), encoder])
        >>> keras_ssl.backbones.rescales_0_255(bare)
        True
        >>> keras_ssl.backbones.rescales_0_255(encoder)
        False
    """
    for layer in keras_compat.sublayers(encoder)[:12]:
        if isinstance(layer, layers.Rescaling):
            scale = np.asarray(layer.scale, "float64")
            return bool(np.all(scale < 1.0 / 50))
        if isinstance(layer, layers.Normalization) and getattr(layer, "input_mean", None) is not None:
            # ConvNeXt subtracts ImageNet's mean in 0-255 pixels (about 120): [0, 1] inputs are wrong.
            return bool(np.all(np.asarray(layer.input_mean, "float64") > 2.0))
    return False


def warn_if_rescales_0_255(encoder):
    """Warns when `encoder` rescales 0-255 pixels itself (see `rescales_0_255`).

    Example:
        >>> import warnings
        >>> from keras_ssl.backbones.external import warn_if_rescales_0_255
        >>> bare = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255), encoder])
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_rescales_0_255(bare)
        >>> "rescales 0-255 pixels itself" in str(caught[0].message)
        True
    """
    if isinstance(encoder, keras.Model) and rescales_0_255(encoder):
        warnings.warn(
            f"the encoder {encoder.name!r} rescales 0-255 pixels itself, but methods feed it images in "
            "[0, 1]: it would train on wrongly scaled input. Build it with "
            "keras_ssl.backbones.application(name, input_shape), which puts the right scaling in front.",
            stacklevel=4,
        )


def input_scaling(name):
    """`(matrix, offset)`: the map from [0, 1] RGB pixels to what `name` takes.

    `y = matrix @ x + offset` per pixel, measured on Keras's own
    `preprocess_input` of the architecture's module (which takes 0-255).

    Example:
        >>> matrix, offset = keras_ssl.backbones.input_scaling("ResNet50")   # BGR flip, x 255, minus means
        >>> matrix.round(1).tolist()
        [[0.0, 0.0, 255.0], [0.0, 255.0, 0.0], [255.0, 0.0, 0.0]]
        >>> offset.round(3).tolist()
        [-103.939, -116.779, -123.68]
        >>> matrix, offset = keras_ssl.backbones.input_scaling("mobilenet_v2")   # [-1, 1]
        >>> np.diag(matrix).round(3).tolist(), offset.round(3).tolist()
        ([2.0, 2.0, 2.0], [-1.0, -1.0, -1.0])
    """
    cls_name = ALIASES.get(name, name)
    module = getattr(keras.applications, cls_name).__module__.rsplit(".", 1)[-1]
    preprocess = importlib.import_module(f"keras.applications.{module}").preprocess_input
    probe = np.concatenate([np.zeros((1, 3)), 255.0 * np.eye(3)]).astype("float32")
    out = np.asarray(keras.ops.convert_to_numpy(preprocess(probe.reshape(1, 1, 4, 3).copy())), "float64")
    out = out.reshape(4, 3)
    offset = out[0]
    matrix = (out[1:] - offset).T  # column k: the response to input channel k at 1.0
    return matrix, offset


def _input_scaling(cls_name):
    """Plain Keras layer applying `input_scaling(cls_name)` to [0, 1] images."""
    matrix, offset = input_scaling(cls_name)
    if np.allclose(matrix, np.diag(np.diag(matrix))):
        scale = np.diag(matrix)
        if np.allclose(scale, scale[0]) and np.allclose(offset, offset[0]):
            return layers.Rescaling(float(scale[0]), offset=float(offset[0]), name="input_scaling")
        return layers.Rescaling([float(v) for v in scale], offset=[float(v) for v in offset], name="input_scaling")
    # Channels swapped (caffe's BGR): a frozen 1x1 convolution, still plain Keras.
    return layers.Conv2D(
        3,
        1,
        name="input_scaling",
        trainable=False,
        kernel_initializer=keras.initializers.Constant(matrix.T.reshape(1, 1, 3, 3)),
        bias_initializer=keras.initializers.Constant(offset),
    )


def from_keras_hub(backbone, input_shape=None, pooling="cls", scale=1 / 255, offset=0.0, name=None, tokens=False):
    """A keras-hub backbone (a model or a preset) as a keras_ssl encoder.

    Token outputs `(B, T, D)` are pooled to `(B, D)`: `"cls"` takes the
    first token (ViT's class token), `"mean"` averages all tokens. Feature
    maps `(B, H, W, C)` are average-pooled. Needs `pip install keras-hub`
    (the `keras-ssl[hub]` extra). With `tokens=True`, a keras-hub ViT or
    DINOv2 backbone becomes a `HubViT`: the token encoder that iBOT,
    DINOv2, I-JEPA, MAE, MSN and SimMIM take, made of the backbone's own
    layers (`encoder.backbone` gives the trained keras-hub model back).

    Args:
        backbone: a `keras_hub.models.Backbone`, or a preset name or local
            preset directory (`Backbone.from_preset`; the preset's image
            converter then gives `scale` and `offset`).
        input_shape: `(H, W, C)`; default: the backbone's `image_shape`.
        pooling: `"cls"` or `"mean"` for token outputs.
        scale, offset: the backbone's input is `255 * x * scale + offset`
            for [0, 1] images `x`, keras-hub's `ImageConverter` convention
            (scale and offset of 0-255 pixels); the defaults feed `x`.
        name: name of the returned model.
        tokens: return a `HubViT` (ViT and DINOv2 backbones only); a
            preset is then loaded at `input_shape`, a model must have it.

    Returns:
        A functional `keras.Model` mapping [0, 1] images to `(B, D)`.

    Example:
        >>> import keras_hub  # doctest: +SKIP
        >>> vit = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=4,
        ...     num_layers=4, num_heads=4, hidden_dim=128, mlp_dim=256)  # doctest: +SKIP
        >>> encoder = keras_ssl.backbones.from_keras_hub(vit, pooling="cls")  # doctest: +SKIP
        >>> encoder.output_shape  # doctest: +SKIP
        (None, 128)
    """
    try:
        import keras_hub
    except ImportError:
        raise ImportError("keras-hub backbones need keras-hub: pip install keras-ssl[hub]") from None
    if pooling not in ("cls", "mean"):
        raise ValueError(f"`pooling` must be 'cls' or 'mean', got {pooling!r}.")
    if isinstance(backbone, str):
        preset = backbone
        # A token encoder's position table is made for one size: the preset's, resized by keras-hub.
        resize = {"image_shape": tuple(input_shape)} if tokens and input_shape is not None else {}
        backbone = keras_hub.models.Backbone.from_preset(preset, **resize)
        try:
            converter = keras_hub.layers.ImageConverter.from_preset(preset)
            scale, offset = converter.scale, converter.offset
        except Exception:  # a preset without an image converter keeps the given scaling
            pass
    if tokens:
        built = tuple(getattr(backbone, "image_shape", None) or ())
        if input_shape is not None and tuple(input_shape) != built:
            raise ValueError(
                f"the token encoder runs at the backbone's image_shape {built}, got input_shape={input_shape}: "
                "build the keras-hub backbone with image_shape=input_shape (or pass its preset's name)."
            )
        return HubViT(backbone, pool=pooling, scale=scale, offset=offset, name=name)
    if input_shape is None:
        input_shape = getattr(backbone, "image_shape", None)
    if input_shape is None or len(tuple(input_shape)) != 3:
        raise ValueError(f"pass input_shape=(H, W, C) for {type(backbone).__name__}, got {input_shape}.")
    inputs = keras.Input(tuple(input_shape), name="images")
    x = layers.Rescaling(_to_list(scale, 255.0), offset=_to_list(offset), name="input_scaling")(inputs)
    h = backbone(x)
    if len(h.shape) == 4:
        h = layers.GlobalAveragePooling2D(name="pool")(h)
    elif len(h.shape) == 3 and pooling == "mean":
        h = layers.GlobalAveragePooling1D(name="pool")(h)
    elif len(h.shape) == 3:
        h = layers.Cropping1D((0, h.shape[1] - 1), name="class_token")(h)
        h = layers.Flatten(name="pool")(h)
    elif len(h.shape) != 2:
        raise ValueError(f"{type(backbone).__name__} returns {h.shape}; expected tokens, maps or features.")
    return keras.Model(inputs, h, name=name or f"{backbone.name}_encoder")


def _to_list(value, factor=1.0):
    if value is None:
        return factor if factor != 1.0 else 0.0
    values = np.asarray(value, "float64").reshape(-1) * factor
    return float(values[0]) if values.size == 1 else [float(v) for v in values]
