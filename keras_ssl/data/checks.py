"""Image batch checks shared by every source (arrays, streams, loaders)."""

import math

import numpy as np


def check_value_range(value_range):
    """`value_range` as `(low, high)` floats, or None; rejects anything else.

    Args:
        value_range: None, or two finite numbers with `low < high`.

    Example:
        >>> keras_ssl.data.check_value_range((0, 255))
        (0.0, 255.0)
    """
    if value_range is None:
        return None
    bad = ValueError(
        f"`value_range` must be (low, high): two finite numbers with low < high, e.g. (0, 255); got {value_range!r}."
    )
    if isinstance(value_range, (str, bytes)) or not hasattr(value_range, "__len__") or len(value_range) != 2:
        raise bad
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise bad from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise bad
    return (low, high)


def looks_channels_first(shape):
    """Whether a rank-4 shape is `(N, C, H, W)` rather than `(N, H, W, C)`.

    Example:
        >>> keras_ssl.data.looks_channels_first((16, 3, 64, 64))
        True
    """
    return len(shape) == 4 and shape[1] in (1, 3, 4) and shape[-1] not in (1, 3, 4) and shape[-1] is not None


def check_images(x, channels=None, min_batch=None, value_range=None, min_size=None):
    """Checks an image batch and returns its pixel value range.

    The same checks run on NumPy arrays and on the first batch of every
    streaming source (`tf.data`, `PyDataset`, generators, torch loaders).

    Args:
        x: images `(N, H, W, C)` (NumPy, or a tensor NumPy can read).
        channels: required channel count `C`, if any.
        min_batch: required minimum number of images, if any.
        value_range: declared `(low, high)` of the pixel values. `None`
            means uint8 images in [0, 255] or float images in [0, 1]; other
            integer dtypes must declare it.
        min_size: smallest allowed height and width (the view size), if any.

    Returns:
        `(low, high)` as floats: the range to map onto [0, 1].

    Raises:
        ValueError: naming the problem (rank, channels-first layout,
            channels, empty batch, size, dtype, NaN/Inf, values outside the
            range).

    Example:
        >>> keras_ssl.data.check_images(np.zeros((8, 32, 32, 3), "uint8"))
        (0.0, 255.0)
        >>> keras_ssl.data.check_images(np.zeros((8, 3, 32, 32), "float32"), channels=3)
        Traceback (most recent call last):
        ...
        ValueError: the images look channels-first (N, C, H, W) = (8, 3, 32, 32); ...
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"expected images of rank 4 (batch, height, width, channels), got shape {x.shape}.")
    if x.shape[0] == 0:
        raise ValueError(f"the image batch is empty (shape {x.shape}).")
    if min_batch is not None and x.shape[0] < min_batch:
        raise ValueError(f"expected at least {min_batch} images, got {x.shape[0]}.")
    if channels is not None and x.shape[-1] != channels:
        if looks_channels_first(x.shape):
            raise ValueError(
                f"the images look channels-first (N, C, H, W) = {x.shape}; keras_ssl takes "
                "channels-last (N, H, W, C). Transpose them, e.g. x.permute(0, 2, 3, 1) in "
                "PyTorch or tf.transpose(x, (0, 2, 3, 1))."
            )
        raise ValueError(
            f"expected images with {channels} channel(s), got {x.shape[-1]} (shape {x.shape}); channels go last."
        )
    if min_size is not None and min(x.shape[1:3]) < min_size:
        raise ValueError(
            f"images of {x.shape[1]}x{x.shape[2]} pixels are smaller than the "
            f"{min_size}x{min_size} views; pass image_size=<at most the image side> "
            "(and a matching encoder), or resize the images."
        )
    kind = x.dtype.kind
    if kind not in "uif":
        raise ValueError(f"images must have an integer or float dtype, got {x.dtype}.")
    value_range = check_value_range(value_range)
    hint = ""
    if value_range is None:
        if x.dtype == np.uint8:
            return (0.0, 255.0)
        if kind in "ui":
            raise ValueError(
                f"integer images of dtype {x.dtype} need value_range=(0, 255) "
                "(or their actual range); only uint8 is assumed to be in [0, 255]."
            )
        value_range = (0.0, 1.0)
        hint = " Pass value_range=(0, 255) for float images in [0, 255]."
    low, high = value_range
    if kind == "f":
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise ValueError(f"the images contain {bad} NaN or Inf value(s).")
    lo, hi = x.min(), x.max()
    if lo < low or hi > high:
        raise ValueError(f"image values span [{lo}, {hi}], outside value_range ({low:g}, {high:g}).{hint}")
    return (low, high)


def to_unit_float(x, value_range=None):
    """Images as float32 in [0, 1].

    Args:
        x: NumPy images; uint8 are taken as [0, 255] and float as [0, 1]
            unless `value_range` says otherwise.
        value_range: `(low, high)` mapped onto `(0, 1)`.

    Returns:
        float32 NumPy array of the same shape.

    Example:
        >>> keras_ssl.data.to_unit_float(np.array([0, 255], "uint8"))
        array([0., 1.], dtype=float32)
    """
    x = np.asarray(x)
    value_range = check_value_range(value_range)
    if value_range is None:
        if x.dtype == np.uint8:
            value_range = (0.0, 255.0)
        elif x.dtype.kind == "f":
            return x.astype("float32", copy=False)
        else:
            raise ValueError(f"images of dtype {x.dtype} need value_range=(low, high).")
    low, high = value_range
    return ((x.astype("float32") - low) / (high - low)).astype("float32", copy=False)
