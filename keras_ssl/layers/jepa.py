"""Fixed 2D sine-cosine positions (MAE, I-JEPA), for the I-JEPA predictor's patch grid."""

import numpy as np


def sincos_positions(dim, grid_size):
    """Fixed 2D sine-cosine position table `(N, dim)` float32, patches in raster order.

    The first half of the features encodes a patch's column, the second its row (the
    official `get_2d_sincos_pos_embed` puts the width coordinate first); each half is
    `[sin(p * w_k), cos(p * w_k)]` with frequencies `w_k = 10000 ** (-k / (dim / 4))`.

    Args:
        dim: feature size, a multiple of 4.
        grid_size: patches per side, or `(height, width)`.

    Example:
        >>> from keras_ssl.layers.jepa import sincos_positions
        >>> table = sincos_positions(8, 4)
        >>> table.shape, table[0].tolist()   # patch (0, 0): sines 0, cosines 1
        ((16, 8), [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    """
    if dim % 4:
        raise ValueError(f"sine-cosine positions need `dim` divisible by 4, got {dim}.")
    height, width = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    rows, cols = np.divmod(np.arange(height * width, dtype=np.float64), width)
    freqs = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))

    def encode(position):
        angles = position[:, None] * freqs[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([encode(cols), encode(rows)], axis=1).astype("float32")
