"""I-JEPA's multi-block masks (Assran et al. 2023), drawn inside the compiled step with static shapes.

Per batch, one target block size and one context block size are drawn (as the official
`MaskCollator` does); per image, `num_targets` target positions and one context position. The
context is its block minus every target block (no overlap), cut to the batch's smallest context
(the official collator's truncation to a common count, in raster order) unless `common_context`
is off. Ragged index lists
become fixed-size index tensors padded to the largest possible block, with a `valid` flag.
"""

import math

import keras
from keras import ops


def _hw(grid_size):
    height, width = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    if min(height, width) < 2:
        raise ValueError(f"the patch grid must be at least 2x2, got {height}x{width}.")
    return int(height), int(width)


def _largest_side(grid_size, scale, aspect):
    height, width = _hw(grid_size)
    keep = math.floor(height * width * scale[1])
    h = min(height - 1, max(1, round(math.sqrt(keep * aspect[1]))))
    w = min(width - 1, max(1, round(math.sqrt(keep / aspect[0]))))
    return h, w


def block_capacity(grid_size, scale, aspect):
    """The most patches a block of this `scale` and `aspect` range can hold (the static pad size).

    Example:
        >>> from keras_ssl.layers.multiblock_masks import block_capacity
        >>> block_capacity(14, (0.15, 0.2), (0.75, 1.5)), block_capacity(14, (0.85, 1.0), (1.0, 1.0))
        (56, 169)
    """
    h, w = _largest_side(grid_size, scale, aspect)
    return h * w


def block_size(u, grid_size, scale, aspect):
    """The official block size for uniform draws `u`: one draw sets both scale and aspect ratio.

    `keep = floor(N * scale)`, `h = round(sqrt(keep * aspect))`, `w = round(sqrt(keep / aspect))`,
    each at most the grid side minus one (and at least 1, where the official code loops forever).

    Args:
        u: uniform draws in [0, 1), any shape.
        grid_size: patches per side, or `(height, width)`.
        scale, aspect: `(min, max)` ranges.

    Returns:
        `(h, w)` int32 tensors shaped like `u`.

    Example:
        >>> from keras_ssl.layers.multiblock_masks import block_size
        >>> h, w = block_size(np.array([0.0, 0.5], "float32"), 14, (0.15, 0.2), (0.75, 1.5))
        >>> ops.convert_to_numpy(h).tolist(), ops.convert_to_numpy(w).tolist()
        ([5, 6], [6, 5])
    """
    height, width = _hw(grid_size)
    max_h, max_w = _largest_side(grid_size, scale, aspect)
    u = ops.cast(u, "float32")
    keep = ops.floor(height * width * (scale[0] + u * (scale[1] - scale[0])))
    ratio = aspect[0] + u * (aspect[1] - aspect[0])
    h = ops.clip(ops.round(ops.sqrt(keep * ratio)), 1, max_h)
    w = ops.clip(ops.round(ops.sqrt(keep / ratio)), 1, max_w)
    return ops.cast(h, "int32"), ops.cast(w, "int32")


def _corners(shape, h, w, height, width, seed):
    # torch.randint(0, height - h): the last possible corner row is never drawn.
    u = keras.random.uniform(shape + (2,), seed=seed)
    top = ops.minimum(ops.floor(u[..., 0] * ops.cast(height - h, "float32")), ops.cast(height - h - 1, "float32"))
    left = ops.minimum(ops.floor(u[..., 1] * ops.cast(width - w, "float32")), ops.cast(width - w - 1, "float32"))
    return ops.cast(top, "int32"), ops.cast(left, "int32")


def _inside(top, left, h, w, height, width):
    rows = ops.arange(height, dtype="int32")[:, None]
    cols = ops.arange(width, dtype="int32")[None, :]
    top, left = top[..., None, None], left[..., None, None]
    return (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)


def multiblock_masks(
    batch_size,
    grid_size,
    *,
    num_targets=4,
    target_scale=(0.15, 0.2),
    target_aspect=(0.75, 1.5),
    context_scale=(0.85, 1.0),
    context_aspect=(1.0, 1.0),
    common_context=True,
    seed=None,
):
    """Draws I-JEPA's context and target blocks for a batch.

    Args:
        batch_size: `B`.
        grid_size: patches per side, or `(height, width)`.
        num_targets: target blocks per image (paper: 4).
        target_scale, target_aspect: target block ranges (paper: (0.15, 0.2), (0.75, 1.5)).
        context_scale, context_aspect: context block ranges (paper: (0.85, 1.0), (1.0, 1.0)).
        common_context: cut every context to the batch's smallest, in raster order (the
            official collator, whose batch needs one length); False: each image keeps its own.
        seed: int or `keras.random.SeedGenerator`.

    Returns:
        A dict: `context_ids` `(B, Kc)` int32 patch indices (raster order) and `context_valid`
        `(B, Kc)` bool; `target_ids` `(B, M, Kt)` and `target_valid` `(B, M, Kt)`;
        `context_mask` `(B, N)` and `target_mask` `(B, M, N)` bool. `Kc`, `Kt` are
        `block_capacity` of the context and target ranges; invalid entries are padding.

    Example:
        >>> from keras_ssl.layers.multiblock_masks import multiblock_masks
        >>> m = multiblock_masks(8, 14, seed=0)
        >>> tuple(m["context_ids"].shape), tuple(m["target_ids"].shape)
        ((8, 169), (8, 4, 56))
        >>> bool(ops.any(m["context_mask"][:, None] & m["target_mask"]))   # never overlap
        False
    """
    height, width = _hw(grid_size)
    n = height * width
    seed = seed if isinstance(seed, keras.random.SeedGenerator) else keras.random.SeedGenerator(seed)
    # One size per batch for the targets and one for the context, as the official collator.
    th, tw = block_size(keras.random.uniform((1,), seed=seed)[0], grid_size, target_scale, target_aspect)
    ch, cw = block_size(keras.random.uniform((1,), seed=seed)[0], grid_size, context_scale, context_aspect)
    top, left = _corners((batch_size, num_targets), th, tw, height, width, seed)
    target_mask = ops.reshape(_inside(top, left, th, tw, height, width), (-1, num_targets, n))
    capacity = block_capacity(grid_size, target_scale, target_aspect)
    i = ops.arange(capacity, dtype="int32")
    target_ids = (top[..., None] + i // tw) * width + left[..., None] + i % tw
    target_valid = ops.broadcast_to(i < th * tw, ops.shape(target_ids))
    target_ids = ops.where(target_valid, target_ids, 0)

    ctop, cleft = _corners((batch_size,), ch, cw, height, width, seed)
    context = ops.reshape(_inside(ctop, cleft, ch, cw, height, width), (-1, n)) & ~ops.any(target_mask, axis=1)
    # The official collator cuts every context to the batch's smallest, keeping the first in raster order.
    keep = ops.sum(ops.cast(context, "int32"), axis=1, keepdims=True)
    if common_context:
        keep = ops.min(keep, axis=0, keepdims=True)
        context = context & (ops.cumsum(ops.cast(context, "int32"), axis=1) <= keep)
    order = ops.arange(n, dtype="int32")
    context_ids = ops.cast(ops.argsort(ops.where(context, order, order + n), axis=1), "int32")
    context_ids = context_ids[:, : block_capacity(grid_size, context_scale, context_aspect)]
    context_valid = ops.broadcast_to(
        ops.arange(context_ids.shape[1], dtype="int32")[None] < keep, ops.shape(context_ids)
    )
    return {
        "context_ids": ops.where(context_valid, context_ids, 0),
        "context_valid": context_valid,
        "target_ids": target_ids,
        "target_valid": target_valid,
        "context_mask": context,
        "target_mask": target_mask,
    }


@keras.saving.register_keras_serializable(package="keras_ssl")
class MultiBlockMasking(keras.layers.Layer):
    """`multiblock_masks` with its own `SeedGenerator` (new blocks every call, replayed on resume).

    Args:
        grid_size: patches per side, or `(height, width)`.
        num_targets, target_scale, target_aspect, context_scale, context_aspect,
            common_context: as `multiblock_masks`.
        seed: integer seed.

    Call arguments: any tensor whose first axis is the batch (the images).

    Example:
        >>> from keras_ssl.layers.multiblock_masks import MultiBlockMasking
        >>> masks = MultiBlockMasking(4, num_targets=2, seed=1)(images)
        >>> tuple(masks["target_mask"].shape), tuple(masks["context_mask"].shape)
        ((8, 2, 16), (8, 16))
    """

    def __init__(
        self,
        grid_size,
        num_targets=4,
        target_scale=(0.15, 0.2),
        target_aspect=(0.75, 1.5),
        context_scale=(0.85, 1.0),
        context_aspect=(1.0, 1.0),
        common_context=True,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.grid_size = _hw(grid_size)
        self.num_targets = int(num_targets)
        self.target_scale, self.target_aspect = _pair(target_scale), _pair(target_aspect)
        self.context_scale, self.context_aspect = _pair(context_scale), _pair(context_aspect)
        self.common_context = bool(common_context)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        return multiblock_masks(
            ops.shape(inputs)[0],
            self.grid_size,
            num_targets=self.num_targets,
            target_scale=self.target_scale,
            target_aspect=self.target_aspect,
            context_scale=self.context_scale,
            context_aspect=self.context_aspect,
            common_context=self.common_context,
            seed=self.seed_generator,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "grid_size": self.grid_size,
            "num_targets": self.num_targets,
            "target_scale": self.target_scale,
            "target_aspect": self.target_aspect,
            "context_scale": self.context_scale,
            "context_aspect": self.context_aspect,
            "common_context": self.common_context,
            "seed": self.seed,
        }


def _pair(values):
    low, high = (float(v) for v in values)
    if not 0 < low <= high:
        raise ValueError(f"expected a range 0 < min <= max, got {values}.")
    return (low, high)
