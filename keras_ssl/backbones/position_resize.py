"""Resizing a ViT's position table for other crop sizes, the same on every backend.

The official ViT codes (DINO, iBOT, MSN, DINOv2) resize with PyTorch's
`F.interpolate(mode="bicubic", align_corners=False)`: a cubic kernel with
a = -0.75 and no antialiasing. `ops.image.resize` uses a = -0.5 on
TensorFlow and JAX, and JAX antialiases when shrinking, so a 96-pixel
crop's positions differed by backend. The table is resized here by two
fixed interpolation matrices written from PyTorch's definition instead.
"""

import math

import numpy as np
from keras import ops

#: The methods `resize_positions` computes itself; others go to `ops.image.resize`.
MATRIX_METHODS = ("bicubic", "bilinear", "nearest")


def _cubic_weights(t, a=-0.75):
    """The four cubic-convolution weights for taps at offsets -1, 0, 1, 2 of fraction `t` (PyTorch's a)."""
    near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1
    far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return far(t + 1), near(t), near(1 - t), far(2 - t)


def resize_matrix(in_size, out_size, interpolation="bicubic"):
    """`(out_size, in_size)` float32 weights of PyTorch's 1-D `F.interpolate(size=out_size)`.

    Half-pixel centres (`align_corners=False`), no antialiasing, edges
    replicated; `"nearest"` takes `floor(i * in / out)`, as PyTorch's.

    Args:
        in_size: source length.
        out_size: output length.
        interpolation: `"bicubic"`, `"bilinear"` or `"nearest"`.

    Example:
        >>> from keras_ssl.backbones.position_resize import resize_matrix
        >>> resize_matrix(2, 4, "bilinear").tolist()
        [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    """
    if interpolation not in MATRIX_METHODS:
        raise ValueError(f"`interpolation` must be one of {MATRIX_METHODS}, got {interpolation!r}.")
    scale = in_size / out_size
    weights = np.zeros((out_size, in_size), "float64")
    for i in range(out_size):
        if interpolation == "nearest":
            weights[i, min(int(math.floor(i * scale)), in_size - 1)] = 1.0
            continue
        source = (i + 0.5) * scale - 0.5
        if interpolation == "bilinear":
            source = max(source, 0.0)  # PyTorch clamps the linear source index at 0, not the cubic one
            low = min(int(math.floor(source)), in_size - 1)
            t = source - low
            weights[i, low] += 1.0 - t
            weights[i, min(low + 1, in_size - 1)] += t
            continue
        low = int(math.floor(source))
        for offset, w in zip((-1, 0, 1, 2), _cubic_weights(source - low)):
            weights[i, min(max(low + offset, 0), in_size - 1)] += w
    return weights.astype("float32")


def resize_positions(table, height, width, interpolation="bicubic"):
    """A `(1, H, W, dim)` position table resized to `(1, height, width, dim)`.

    `MATRIX_METHODS` follow PyTorch's `F.interpolate` (`resize_matrix`) on
    every backend; any other `ops.image.resize` method goes to it.

    Args:
        table: the `(1, H, W, dim)` tensor, static `H` and `W`.
        height: output grid height.
        width: output grid width.
        interpolation: `"bicubic"` (default), `"bilinear"`, `"nearest"`, or
            another `ops.image.resize` method.

    Example:
        >>> from keras_ssl.backbones.position_resize import resize_positions
        >>> table = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
        >>> ops.convert_to_numpy(resize_positions(table, 2, 2, "bilinear"))[0, :, :, 0].tolist()
        [[2.5, 4.5], [10.5, 12.5]]
    """
    if interpolation not in MATRIX_METHODS:
        return ops.image.resize(table, (height, width), interpolation=interpolation)
    rows = ops.convert_to_tensor(resize_matrix(table.shape[1], height, interpolation), table.dtype)
    cols = ops.convert_to_tensor(resize_matrix(table.shape[2], width, interpolation), table.dtype)
    return ops.einsum("hH,wW,bHWd->bhwd", rows, cols, table)
