"""BEiT's relative position bias (Bao et al. 2022), one table shared by every block: SimMIM's ViT.

Instead of adding positions to the tokens, each attention logit between two
patches gets a learned per-head bias that depends only on their offset
`(row_q - row_k, col_q - col_k)`; the class token has three entries of its
own (class to patch, patch to class, class to class).
"""

import keras
import numpy as np
from keras import ops

layers = keras.layers


def relative_position_index(grid, table_grid, class_token=True):
    """`(T, T)` int array: row of the bias table for each (query, key) token pair.

    Patches are in raster order after the class token. The table holds
    `(2 H - 1) (2 W - 1)` patch offsets of the `table_grid` `(H, W)` it was
    built for, then three class-token entries. A smaller `grid` (a crop)
    reads the entries of its own offsets, all of which the table has.

    Args:
        grid: `(height, width)` patches of the tokens.
        table_grid: `(H, W)` patch grid the table was built for.
        class_token: the tokens start with a class token.

    Example:
        >>> from keras_ssl.backbones.relative_positions import relative_position_index
        >>> relative_position_index((1, 2), (1, 2)).tolist()   # 3 offsets, then the class entries 3, 4, 5
        [[5, 3, 3], [4, 1, 0], [4, 2, 1]]
    """
    (height, width), (table_height, table_width) = grid, table_grid
    if height > table_height or width > table_width:
        raise ValueError(
            f"a relative position bias built for a {table_height}x{table_width} patch grid covers grids up to "
            f"that size, got {height}x{width}."
        )
    rows, cols = np.divmod(np.arange(height * width), width)
    patches = (rows[:, None] - rows[None, :] + table_height - 1) * (2 * table_width - 1)
    patches += cols[:, None] - cols[None, :] + table_width - 1
    if not class_token:
        return patches
    offsets = (2 * table_height - 1) * (2 * table_width - 1)
    index = np.empty((1 + height * width,) * 2, patches.dtype)
    index[1:, 1:] = patches
    index[0, :] = offsets  # the class token attending to a patch
    index[:, 0] = offsets + 1  # a patch attending to the class token
    index[0, 0] = offsets + 2
    return index


@keras.saving.register_keras_serializable(package="keras_ssl")
class RelativePositionBias(layers.Layer):
    """Learned attention bias per head and token offset, built for the patch grid it first sees.

    Called on a patch grid `(B, h, w, dim)`, it returns the bias
    `(1, heads, T, T)` (`T = class token + h * w`) that every block adds to
    its attention logits. The table starts at zero, as BEiT's and SimMIM's.

    Args:
        heads: attention heads (one bias each).
        class_token: the tokens start with a class token.

    Example:
        >>> from keras_ssl.backbones.relative_positions import RelativePositionBias
        >>> layer = RelativePositionBias(heads=2)
        >>> tuple(layer(ops.zeros((1, 4, 4, 8))).shape), tuple(layer.table.shape)   # 7 * 7 offsets + 3
        ((1, 2, 17, 17), (52, 2))
        >>> tuple(layer.bias(2, 2).shape)   # a smaller grid reads its own offsets
        (1, 2, 5, 5)
    """

    def __init__(self, heads, class_token=True, **kwargs):
        super().__init__(**kwargs)
        self.heads, self.class_token = int(heads), bool(class_token)

    def build(self, input_shape):
        self.grid_height, self.grid_width = input_shape[1], input_shape[2]
        size = (2 * self.grid_height - 1) * (2 * self.grid_width - 1) + 3 * self.class_token
        self.table = self.add_weight(name="table", shape=(size, self.heads), initializer="zeros")

    def bias(self, height, width):
        """The `(1, heads, T, T)` bias of a `height x width` patch grid."""
        index = relative_position_index((height, width), (self.grid_height, self.grid_width), self.class_token)
        tokens = index.shape[0]
        bias = ops.reshape(ops.take(self.table, index.reshape(-1), axis=0), (tokens, tokens, self.heads))
        return ops.expand_dims(ops.transpose(bias, (2, 0, 1)), 0)

    def call(self, grid):
        if grid.shape[1] is None or grid.shape[2] is None:
            raise ValueError("the patch grid needs a static height and width.")
        return self.bias(grid.shape[1], grid.shape[2])

    def compute_output_shape(self, input_shape):
        tokens = None if None in input_shape[1:3] else self.class_token + input_shape[1] * input_shape[2]
        return (1, self.heads, tokens, tokens)

    def get_config(self):
        return {**super().get_config(), "heads": self.heads, "class_token": self.class_token}
