"""SimMIM's random masking (Xie et al. 2022): square mask patches, a fixed count per image.

The image is cut into `mask_patch_size` squares; exactly
`ceil(mask_ratio * count)` of them, uniformly at random, are masked. The
mask is returned at the model's patch grid (each mask patch covers
`(mask_patch_size / patch_size)^2` model patches), in raster order.
"""

import math

import keras
from keras import ops


def mask_grid(image_size, patch_size, mask_patch_size, mask_ratio):
    """Checks the sizes; returns `(rand_size, scale, mask_count)` of the official `MaskGenerator`.

    `rand_size` mask patches per side, `scale` model patches per mask patch
    side, and `mask_count = ceil(rand_size^2 * mask_ratio)` masked ones.
    Raises ValueError when the sizes do not nest or every mask patch would
    be masked.

    Example:
        >>> from keras_ssl.layers.random_masks import mask_grid
        >>> mask_grid(224, 16, 32, 0.6)   # SimMIM ViT-B: 7x7 mask patches, 30 masked
        (7, 2, 30)
    """
    image_size, patch_size, mask_patch_size = int(image_size), int(patch_size), int(mask_patch_size)
    if not 0 < mask_ratio < 1:
        raise ValueError(f"`mask_ratio` must be in (0, 1), got {mask_ratio}.")
    if patch_size < 1 or mask_patch_size % patch_size:
        raise ValueError(f"mask_patch_size {mask_patch_size} must be a multiple of the patch_size {patch_size}.")
    if mask_patch_size < 1 or image_size % mask_patch_size:
        raise ValueError(f"mask_patch_size {mask_patch_size} does not divide the image_size {image_size}.")
    rand_size = image_size // mask_patch_size
    # The official expression, float product and all: ceil(0.6 * 49) = 30.
    mask_count = int(math.ceil(rand_size**2 * mask_ratio))
    if mask_count >= rand_size**2:
        raise ValueError(
            f"mask_ratio {mask_ratio} masks all {rand_size**2} mask patches of {mask_patch_size} px in a "
            f"{image_size} px image: use a smaller mask_patch_size or mask_ratio."
        )
    return rand_size, mask_patch_size // patch_size, mask_count


def random_square_masks(batch_size, image_size, patch_size, mask_patch_size=32, mask_ratio=0.6, seed=None):
    """SimMIM masks `(B, N)` float32, 1 = masked, at the model's patch grid in raster order.

    Each image gets its own uniformly random set of `ceil(mask_ratio * count)`
    of its `count = (image_size / mask_patch_size)^2` mask patches (the
    lowest ranks of uniform noise: a random permutation's first ones, as the
    official `np.random.permutation(count)[:mask_count]`), each expanded to
    the `(mask_patch_size / patch_size)^2` model patches it covers.

    Args:
        batch_size: `B` (an int or a scalar tensor).
        image_size: image side; `mask_patch_size` must divide it.
        patch_size: the model's patch side; must divide `mask_patch_size`.
        mask_patch_size: side of the masked squares (SimMIM: 32).
        mask_ratio: fraction of mask patches masked, in (0, 1) (SimMIM: 0.6).
        seed: int or `keras.random.SeedGenerator`.

    Example:
        >>> from keras_ssl.layers.random_masks import random_square_masks
        >>> mask = random_square_masks(8, 16, 4, mask_patch_size=8, mask_ratio=0.6, seed=0)
        >>> tuple(mask.shape), ops.convert_to_numpy(ops.sum(mask, axis=1)).tolist()   # 3 of 4 squares of 2x2 patches
        ((8, 16), [12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0, 12.0])
    """
    rand_size, scale, mask_count = mask_grid(image_size, patch_size, mask_patch_size, mask_ratio)
    noise = keras.random.uniform((batch_size, rand_size**2), seed=seed)
    ranks = ops.argsort(ops.argsort(noise, axis=1), axis=1)
    mask = ops.reshape(ops.cast(ranks < mask_count, "float32"), (-1, rand_size, rand_size))
    mask = ops.repeat(ops.repeat(mask, scale, axis=1), scale, axis=2)
    return ops.reshape(mask, (-1, (rand_size * scale) ** 2))


@keras.saving.register_keras_serializable(package="keras_ssl")
class RandomSquareMasking(keras.layers.Layer):
    """`random_square_masks` with its own `SeedGenerator`: a new mask per image and call.

    Called on a batch (images or tokens: only its size is read), it returns
    the `(B, N)` float32 mask, 1 = masked, at the model's patch grid.

    Args:
        image_size: image side; `mask_patch_size` must divide it.
        patch_size: the model's patch side; must divide `mask_patch_size`.
        mask_patch_size: side of the masked squares (SimMIM: 32).
        mask_ratio: fraction of mask patches masked, in (0, 1) (SimMIM: 0.6).
        seed: integer seed.

    Example:
        >>> from keras_ssl.layers.random_masks import RandomSquareMasking
        >>> masking = RandomSquareMasking(16, 4, mask_patch_size=8, seed=1)
        >>> tuple(masking(images).shape)   # (B, (16 / 4)^2)
        (8, 16)
    """

    def __init__(self, image_size, patch_size, mask_patch_size=32, mask_ratio=0.6, seed=None, **kwargs):
        super().__init__(**kwargs)
        mask_grid(image_size, patch_size, mask_patch_size, mask_ratio)
        self.image_size, self.patch_size = int(image_size), int(patch_size)
        self.mask_patch_size, self.mask_ratio = int(mask_patch_size), float(mask_ratio)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, batch):
        return random_square_masks(
            ops.shape(batch)[0],
            self.image_size,
            self.patch_size,
            self.mask_patch_size,
            self.mask_ratio,
            self.seed_generator,
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0], (self.image_size // self.patch_size) ** 2)

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "mask_patch_size": self.mask_patch_size,
            "mask_ratio": self.mask_ratio,
            "seed": self.seed,
        }
