"""Blockwise patch masks (BEiT, iBOT, DINOv2), drawn inside the compiled step.

The official samplers (BEiT's and DINOv2's `MaskingGenerator`, iBOT's `ImageFolderMask`) run in
the data loader: per image, rounds of up to 10 attempts at one random rectangle (area uniform in
`[min_num_patches, min(remaining, max_num_patches)]`, aspect log-uniform in `(0.3, 1 / 0.3)`),
each round keeping the first rectangle that masks `0 < new <= remaining` more patches, until the
image's target count is reached or a whole round fails. Here every image runs that same stream of
attempts, all images at once, for a fixed budget of `max_attempts` attempts (static shapes; with
the default 32, none of 4000 images with DINOv2's or iBOT's settings on a 14 x 14 grid needed
more in the official loop), from a SeedGenerator, so a resume replays them exactly.

How many patches each image gets differs between the papers (`mask_targets`):

- DINOv2 (`spread="linspace"`, collate_data_and_cast): exactly `int(B * mask_probability)` of the
  `B` images (both global crops together) are masked, their ratios stratified over
  `mask_ratio = (0.1, 0.5)` in `linspace` bins, target `int(N * ratio)`; the rest unmasked; the
  order shuffled. `mask_probability=0.5`, `min_num_patches=4`, `max_num_patches=0.5 * N`.
- iBOT (`spread="independent"`, loader.py): each crop is masked with probability
  `mask_probability`, ratio uniform in `mask_ratio`, target `ratio * N` (not rounded). The paper's
  runs (`--pred_ratio 0 0.3 --pred_ratio_var 0 0.2`) are `mask_probability=0.5`,
  `mask_ratio=(0.1, 0.5)`; main_ibot.py's bare defaults (`0.3`, var 0) are `mask_probability=1`,
  `mask_ratio=(0.3, 0.3)`. `min_num_patches=(min(h, w) // 3) ** 2`, no `max_num_patches`.

`paper_masking(method, grid_size)` returns those settings.
"""

import math

import keras
from keras import ops

_SPREADS = ("linspace", "independent")
_FAILED_ROUND = 10  # attempts per round in the official loop: a round without a block ends it


def _grid(grid_size):
    return (int(grid_size), int(grid_size)) if isinstance(grid_size, int) else tuple(int(s) for s in grid_size)


def _check_ratio(mask_ratio, mask_probability, spread):
    low, high = mask_ratio
    if not 0 <= low <= high <= 1:
        raise ValueError(f"`mask_ratio` must be (low, high) with 0 <= low <= high <= 1, got {mask_ratio}.")
    if not 0 <= mask_probability <= 1:
        raise ValueError(f"`mask_probability` must be in [0, 1], got {mask_probability}.")
    if spread not in _SPREADS:
        raise ValueError(f"`spread` must be one of {_SPREADS}, got {spread!r}.")


def paper_masking(method, grid_size):
    """The official masking settings of `"ibot"` or `"dinov2"` for a patch grid, as keyword arguments.

    iBOT: its paper runs' `--pred_ratio 0 0.3 --pred_ratio_var 0 0.2`, minimum block area
    `(min(h, w) // 3) ** 2`, no cap. DINOv2: ssl_default_config.yaml's `mask_sample_probability`
    0.5 and `mask_ratio_min_max` (0.1, 0.5), blocks of 4 to `0.5 * N` patches (train.py).

    Example:
        >>> from keras_ssl.layers.block_masks import paper_masking
        >>> paper_masking("dinov2", 14)
        {'mask_ratio': (0.1, 0.5), 'mask_probability': 0.5, 'spread': 'linspace', 'min_num_patches': 4, 'max_num_patches': 98}
        >>> paper_masking("ibot", 14)["min_num_patches"]
        16
    """
    height, width = _grid(grid_size)
    common = {"mask_ratio": (0.1, 0.5), "mask_probability": 0.5}
    if method == "dinov2":
        return {**common, "spread": "linspace", "min_num_patches": 4, "max_num_patches": height * width // 2}
    if method == "ibot":
        return {**common, "spread": "independent", "min_num_patches": (min(height, width) // 3) ** 2}
    raise ValueError(f"`method` must be 'ibot' or 'dinov2', got {method!r}.")


def mask_targets(batch_size, num_patches, mask_ratio=(0.1, 0.5), mask_probability=0.5, spread="linspace", seed=None):
    """How many patches each image should get masked: `(B,)` float32 targets (0: not masked).

    Args:
        batch_size: `B`, an int or a scalar tensor.
        num_patches: `N = h * w`.
        mask_ratio: `(low, high)` range of the masked share of a masked image.
        mask_probability: share (`"linspace"`) or probability (`"independent"`) of masked images.
        spread: `"linspace"` (DINOv2: `int(B * p)` images, ratios in stratified bins, integer
            targets, shuffled) or `"independent"` (iBOT: each image on its own, targets
            `ratio * N` not rounded).
        seed: int or `keras.random.SeedGenerator`.

    Example:
        >>> from keras_ssl.layers.block_masks import mask_targets
        >>> t = ops.convert_to_numpy(mask_targets(8, 196, seed=0))   # DINOv2: 4 images masked
        >>> int((t > 0).sum()), bool(((t >= 19) & (t <= 98) | (t == 0)).all())
        (4, True)
    """
    _check_ratio(mask_ratio, mask_probability, spread)
    low, high = float(mask_ratio[0]), float(mask_ratio[1])
    draws = keras.random.uniform((batch_size, 3), seed=seed)
    if spread == "independent":
        masked = ops.cast(draws[:, 0] < mask_probability, "float32")
        return masked * (low + (high - low) * draws[:, 1]) * num_patches
    # Bins by index: image i < n gets a ratio uniform in [lin[i], lin[i + 1]], lin = linspace(low, high, n + 1).
    index = ops.cumsum(ops.ones_like(draws[:, 0])) - 1.0
    n_masked = ops.floor(ops.cast(batch_size, "float32") * mask_probability)
    ratio = low + (high - low) * (index + draws[:, 1]) / ops.maximum(n_masked, 1.0)
    targets = ops.where(index < n_masked, ops.floor(num_patches * ratio), 0.0)
    return ops.take(targets, ops.argsort(draws[:, 2]), axis=0)


def blockwise_masks(
    targets,
    grid_size,
    min_num_patches=4,
    max_num_patches=None,
    min_aspect=0.3,
    max_aspect=None,
    max_attempts=32,
    seed=None,
):
    """Rectangles of patches masked until each image reaches its target (the official rejection loop).

    Args:
        targets: `(B,)` patches to mask per image (`mask_targets`); 0 leaves an image unmasked.
        grid_size: `h` (square) or `(h, w)` patches.
        min_num_patches: smallest area drawn for one rectangle (DINOv2 4, iBOT `(min(h, w) // 3) ** 2`).
        max_num_patches: largest area of one rectangle, None for no cap (DINOv2 `0.5 * N`).
        min_aspect, max_aspect: log-uniform aspect range of a rectangle (`max_aspect=None`:
            `1 / min_aspect`).
        max_attempts: attempts per image (static); the official loop has no budget.
        seed: int or `keras.random.SeedGenerator`.

    Returns:
        `(B, h * w)` float32 masks, 1 = masked, in raster order.

    Example:
        >>> from keras_ssl.layers.block_masks import blockwise_masks
        >>> m = blockwise_masks(ops.convert_to_tensor([0.0, 8.0, 20.0]), 8, seed=0)
        >>> ops.convert_to_numpy(ops.sum(m, axis=1)).tolist()
        [0.0, 8.0, 20.0]
    """
    height, width = _grid(grid_size)
    if not 0 < min_aspect <= (max_aspect or 1 / min_aspect):
        raise ValueError(f"need 0 < min_aspect <= max_aspect, got {min_aspect}, {max_aspect}.")
    if max_attempts < 1:
        raise ValueError(f"`max_attempts` must be >= 1, got {max_attempts}.")
    log_low, log_high = math.log(min_aspect), math.log(max_aspect or 1 / min_aspect)
    cap = float("inf") if max_num_patches is None else float(max_num_patches)
    targets = ops.cast(targets, "float32")
    batch = ops.shape(targets)[0]
    draws = keras.random.uniform((max_attempts, batch, 4), seed=seed)
    rows = ops.arange(height, dtype="float32")
    cols = ops.arange(width, dtype="float32")

    def attempt(t, state):
        mask, count, fails, stopped = state
        u = ops.take(draws, t, axis=0)
        active = (1.0 - stopped) * ops.cast(count < targets, "float32")
        room = ops.minimum(targets - count, cap)
        area = ops.maximum(min_num_patches + (room - min_num_patches) * u[:, 0], 0.0)
        aspect = ops.exp(log_low + (log_high - log_low) * u[:, 1])
        h = ops.round(ops.sqrt(area * aspect))
        w = ops.round(ops.sqrt(area / aspect))
        fits = ops.cast((h < height) & (w < width), "float32")
        # Python's randint(0, H - h): H - h + 1 equally likely corners.
        top = ops.clip(ops.floor(u[:, 2] * (height - h + 1)), 0.0, ops.maximum(height - h, 0.0))
        left = ops.clip(ops.floor(u[:, 3] * (width - w + 1)), 0.0, ops.maximum(width - w, 0.0))
        in_rows = ops.cast((rows >= top[:, None]) & (rows < (top + h)[:, None]), "float32")
        in_cols = ops.cast((cols >= left[:, None]) & (cols < (left + w)[:, None]), "float32")
        block = ops.reshape(in_rows[:, :, None] * in_cols[:, None, :], (-1, height * width))
        new = ops.sum(block * (1.0 - mask), axis=1)
        ok = active * fits * ops.cast((new > 0) & (new <= room), "float32")
        mask = ops.maximum(mask, block * ok[:, None])
        count = count + new * ok
        fails = ops.where(ok > 0, 0.0, fails + active)
        stopped = ops.maximum(stopped, ops.cast(fails >= _FAILED_ROUND, "float32"))
        return mask, count, fails, stopped

    zeros = ops.zeros_like(targets)
    # (B, h * w) zeros for a batch size that may be dynamic (TF graphs).
    init = (ops.zeros_like(draws[0, :, :1]) * ops.zeros((1, height * width)), zeros, zeros, zeros)
    return ops.fori_loop(0, max_attempts, attempt, init)[0]


def block_masks(
    batch_size,
    grid_size,
    mask_ratio=(0.1, 0.5),
    mask_probability=0.5,
    spread="linspace",
    min_num_patches=4,
    max_num_patches=None,
    min_aspect=0.3,
    max_aspect=None,
    max_attempts=32,
    seed=None,
):
    """`mask_targets` then `blockwise_masks`: `(B, h * w)` float32 masks, 1 = masked.

    Args:
        batch_size: `B`, an int or a scalar tensor.
        grid_size: `h` (square) or `(h, w)` patches.
        mask_ratio, mask_probability, spread: see `mask_targets`.
        min_num_patches, max_num_patches, min_aspect, max_aspect, max_attempts: see `blockwise_masks`.
        seed: int or `keras.random.SeedGenerator`.

    Example:
        >>> from keras_ssl.layers.block_masks import block_masks, paper_masking
        >>> m = block_masks(8, 4, seed=0, **paper_masking("dinov2", 4))   # 4 of 8 images masked
        >>> tuple(m.shape), int(ops.sum(ops.cast(ops.sum(m, axis=1) > 0, "int32")))
        ((8, 16), 4)
    """
    grid = _grid(grid_size)
    if isinstance(seed, int):
        seed = keras.random.SeedGenerator(seed)
    targets = mask_targets(batch_size, grid[0] * grid[1], mask_ratio, mask_probability, spread, seed)
    return blockwise_masks(targets, grid, min_num_patches, max_num_patches, min_aspect, max_aspect, max_attempts, seed)


@keras.saving.register_keras_serializable(package="keras_ssl")
class BlockMasking(keras.layers.Layer):
    """`block_masks` with its own `SeedGenerator`: new masks at every call.

    Args:
        grid_size: `h` (square) or `(h, w)` patches.
        mask_ratio, mask_probability, spread, min_num_patches, max_num_patches, min_aspect,
            max_aspect, max_attempts: see `block_masks`; `paper_masking(method, grid_size)` gives
            iBOT's or DINOv2's.
        seed: integer seed.

    Call:
        `layer(x)` -> `(B, h * w)` float32 masks for the `B = shape(x)[0]` images of any batch `x`.

    Example:
        >>> from keras_ssl.layers.block_masks import BlockMasking, paper_masking
        >>> layer = BlockMasking(4, seed=1, **paper_masking("ibot", 4))
        >>> masks = layer(images)
        >>> tuple(masks.shape), bool(ops.all((masks == 0) | (masks == 1)))
        ((8, 16), True)
        >>> BlockMasking.from_config(layer.get_config()).spread
        'independent'
    """

    def __init__(
        self,
        grid_size,
        mask_ratio=(0.1, 0.5),
        mask_probability=0.5,
        spread="linspace",
        min_num_patches=4,
        max_num_patches=None,
        min_aspect=0.3,
        max_aspect=None,
        max_attempts=32,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_ratio(mask_ratio, mask_probability, spread)
        self.grid_size = _grid(grid_size)
        self.mask_ratio = (float(mask_ratio[0]), float(mask_ratio[1]))
        self.mask_probability = float(mask_probability)
        self.spread = spread
        self.min_num_patches = float(min_num_patches)
        self.max_num_patches = None if max_num_patches is None else float(max_num_patches)
        self.min_aspect = float(min_aspect)
        self.max_aspect = None if max_aspect is None else float(max_aspect)
        self.max_attempts = int(max_attempts)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        return block_masks(
            ops.shape(inputs)[0],
            self.grid_size,
            self.mask_ratio,
            self.mask_probability,
            self.spread,
            self.min_num_patches,
            self.max_num_patches,
            self.min_aspect,
            self.max_aspect,
            self.max_attempts,
            self.seed_generator,
        )

    def max_masked(self, batch_size):
        """The most patches one call can mask over `batch_size` images in all: a bound from the settings only.

        No image gets more than its target (`mask_targets`). iBOT's (`"independent"`): any image up
        to `high * N`. DINOv2's (`"linspace"`): `n = int(B * p)` images, the i-th below
        `N * lin[i + 1]`, at most `N * (n * low + (high - low) * (n + 1) / 2)` in all (collate's
        `upperbound`, before each term is rounded down). iBOT and DINOv2 run their patch heads on
        this many gathered patches, so its shapes are static.

        Args:
            batch_size: `B`, an int, or a scalar tensor where the batch is not static (TF graphs).

        Returns:
            An int (an int32 scalar tensor for a tensor `batch_size`), between 1 and `B * N`.

        Example:
            >>> from keras_ssl.layers.block_masks import BlockMasking, paper_masking
            >>> BlockMasking(14, **paper_masking("dinov2", 14)).max_masked(64)   # of 64 * 196 patches
            1920
            >>> BlockMasking(14, **paper_masking("ibot", 14)).max_masked(64)     # 64 * int(0.5 * 196)
            6272
        """
        n = self.grid_size[0] * self.grid_size[1]
        low, high = self.mask_ratio
        static = isinstance(batch_size, int)
        floor, b = (math.floor, batch_size) if static else (ops.floor, ops.cast(batch_size, "float32"))
        # The relative 1e-5 covers the float32 rounding of the drawn ratios (exact ones give whole targets).
        if self.spread == "independent":
            images = b if self.mask_probability > 0 else 0 * b
            total = images * math.floor(n * high * (1 + 1e-5))
        else:
            images = floor(b * self.mask_probability)
            total = floor(n * (1 + 1e-5) * (images * low + (high - low) * (images + 1) / 2))
        if static:
            return int(max(1, min(total, images * n)))
        return ops.cast(ops.maximum(ops.minimum(total, images * n), 1.0), "int32")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.grid_size[0] * self.grid_size[1])

    def get_config(self):
        return {
            **super().get_config(),
            "grid_size": self.grid_size,
            "mask_ratio": self.mask_ratio,
            "mask_probability": self.mask_probability,
            "spread": self.spread,
            "min_num_patches": self.min_num_patches,
            "max_num_patches": self.max_num_patches,
            "min_aspect": self.min_aspect,
            "max_aspect": self.max_aspect,
            "max_attempts": self.max_attempts,
            "seed": self.seed,
        }
