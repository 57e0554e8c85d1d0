"""Patches and random patch masking (MAE, He et al. 2022).

A patch vector lists its pixels row by row, channels last: index
`(row * patch_size + col) * channels + channel`.
"""

import math

import keras
from keras import ops


def _hw(size):
    return (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)


def patchify(images, patch_size):
    """Images `(B, H, W, C)` -> patches `(B, N, p * p * C)`, `N = (H / p) * (W / p)`.

    Patches are in raster order (left to right, then top to bottom).

    Args:
        images: batch with static height, width and channels.
        patch_size: side `p` of the square patches; must divide H and W.

    Example:
        >>> from keras_ssl.layers.masking import patchify
        >>> tuple(patchify(images, 4).shape)   # (B, (H / p) * (W / p), p * p * C)
        (8, 16, 48)
    """
    _, height, width, channels = images.shape
    p = int(patch_size)
    if height % p or width % p:
        raise ValueError(f"patch_size {p} does not divide the image size {height}x{width}.")
    x = ops.reshape(images, (-1, height // p, p, width // p, p, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, (height // p) * (width // p), p * p * channels))


def unpatchify(patches, patch_size, image_size, channels):
    """The exact inverse of `patchify`: `(B, N, p * p * C)` -> `(B, H, W, C)`.

    Args:
        patches: patch vectors in raster order.
        patch_size: side `p` of the patches.
        image_size: `H` (square) or `(H, W)` of the images.
        channels: `C`.

    Example:
        >>> from keras_ssl.layers.masking import patchify, unpatchify
        >>> x = unpatchify(patchify(images, 4), 4, 16, 3)   # == images
        >>> tuple(x.shape), bool(np.array_equal(x, images))
        ((8, 16, 16, 3), True)
    """
    height, width = _hw(image_size)
    p = int(patch_size)
    if height % p or width % p:
        raise ValueError(f"patch_size {p} does not divide the image size {height}x{width}.")
    expected = ((height // p) * (width // p), p * p * channels)
    if tuple(patches.shape[1:]) != expected:
        raise ValueError(
            f"expected patches of shape (B, {expected[0]}, {expected[1]}) for "
            f"{height}x{width}x{channels} images, got {tuple(patches.shape)}."
        )
    x = ops.reshape(patches, (-1, height // p, width // p, p, p, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height, width, channels))


def num_visible(num_tokens, mask_ratio):
    """Tokens kept by `random_masking`: `int(num_tokens * (1 - mask_ratio))`, as MAE's `random_masking`.

    The product is floored as the official `int()` does, after adding 1e-6 so
    that float rounding (0.999...) cannot drop a token from an exact count.

    Raises ValueError when that keeps none or masks none.

    Example:
        >>> from keras_ssl.layers.masking import num_visible
        >>> num_visible(64, 0.75)
        16
    """
    if not 0 < mask_ratio < 1:
        raise ValueError(f"`mask_ratio` must be in (0, 1), got {mask_ratio}.")
    keep = int(math.floor(num_tokens * (1 - mask_ratio) + 1e-6))
    if not 0 < keep < num_tokens:
        raise ValueError(
            f"mask_ratio {mask_ratio} keeps {keep} of {num_tokens} tokens; it must keep at "
            "least one and mask at least one."
        )
    return keep


def random_masking(tokens, mask_ratio, seed=None):
    """Per-sample random masking by sorting uniform noise (MAE).

    Each sample keeps its own random `num_visible(N, mask_ratio)` tokens, in
    shuffled order.

    Args:
        tokens: `(B, N, D)` with a static `N`.
        mask_ratio: fraction of tokens to mask, in (0, 1).
        seed: int or `keras.random.SeedGenerator`.

    Returns:
        `(visible, mask, ids_restore)`: `visible` `(B, n, D)` the kept
        tokens; `mask` `(B, N)` float, 1 for masked tokens (original order);
        `ids_restore` `(B, N)` int, where each original token sits in the
        shuffled order, so `take_along_axis(concat([visible, masked]),
        ids_restore)` puts tokens back in place.

    Example:
        >>> from keras_ssl.layers.masking import random_masking
        >>> tokens = keras.random.normal((2, 16, 8), seed=0)
        >>> visible, mask, ids_restore = random_masking(tokens, 0.75, seed=0)
        >>> tuple(visible.shape), ops.convert_to_numpy(ops.sum(mask, axis=1)).tolist()   # 4 kept, 12 masked
        ((2, 4, 8), [12.0, 12.0])
    """
    num_tokens = tokens.shape[1]
    keep = num_visible(num_tokens, mask_ratio)
    noise = keras.random.uniform((ops.shape(tokens)[0], num_tokens), seed=seed)
    ids_shuffle = ops.argsort(noise, axis=1)
    ids_restore = ops.argsort(ids_shuffle, axis=1)
    visible = take_tokens(tokens, ids_shuffle[:, :keep])
    # A token is masked when its place in the shuffled order is past the kept ones.
    mask = ops.cast(ids_restore >= keep, "float32")
    return visible, mask, ids_restore


def take_tokens(tokens, ids):
    """`tokens[b, ids[b, i], :]`: `(B, N, D)`, `(B, n)` ints -> `(B, n, D)`.

    Example:
        >>> from keras_ssl.layers.masking import random_masking, take_tokens
        >>> tokens = keras.random.normal((2, 16, 8), seed=0)
        >>> visible, mask, ids_restore = random_masking(tokens, 0.75, seed=0)
        >>> masked = ops.zeros((2, 12, 8))   # stand-ins for the masked tokens (MAE's mask token)
        >>> restored = take_tokens(ops.concatenate([visible, masked], axis=1), ids_restore)  # unshuffle
        >>> bool(np.array_equal(restored * (1 - mask[..., None]), tokens * (1 - mask[..., None])))
        True
    """
    shape = (ops.shape(ids)[0], ids.shape[1], tokens.shape[-1])
    ids = ops.broadcast_to(ops.expand_dims(ids, -1), shape)
    return ops.take_along_axis(tokens, ids, axis=1)


@keras.saving.register_keras_serializable(package="keras_ssl")
class RandomMasking(keras.layers.Layer):
    """`random_masking` with its own `SeedGenerator` (new masks every call).

    Args:
        mask_ratio: fraction of tokens to mask, in (0, 1).
        seed: integer seed.

    Example:
        >>> from keras_ssl.layers.masking import RandomMasking
        >>> tokens = keras.random.normal((2, 16, 8), seed=0)
        >>> visible, mask, ids_restore = RandomMasking(0.75, seed=1)(tokens)
        >>> tuple(visible.shape), tuple(mask.shape), tuple(ids_restore.shape)
        ((2, 4, 8), (2, 16), (2, 16))
    """

    def __init__(self, mask_ratio=0.75, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 < mask_ratio < 1:
            raise ValueError(f"`mask_ratio` must be in (0, 1), got {mask_ratio}.")
        self.mask_ratio = float(mask_ratio)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, tokens):
        return random_masking(tokens, self.mask_ratio, self.seed_generator)

    def get_config(self):
        return {**super().get_config(), "mask_ratio": self.mask_ratio, "seed": self.seed}


def encoder_pixels(encoder, images, inverse=False):
    """`images` as `encoder` sees them: standardised by its `pixel_norm` (a keras_ssl `ViT`), else unchanged.

    The reconstruction target of MAE and SimMIM: their official codes read
    the loader's normalised images, which both the encoder and the loss see.
    `inverse` undoes it (reconstructions back to [0, 1] pixels).

    Example:
        >>> from keras_ssl.layers.masking import encoder_pixels
        >>> vit = keras_ssl.backbones.vit(image_size=8, patch_size=4, dim=8, depth=1, heads=2, pixel_norm="imagenet")
        >>> x = np.full((1, 8, 8, 3), 0.485, "float32")   # ImageNet's mean red
        >>> y = encoder_pixels(vit, x)
        >>> float(y[0, 0, 0, 0]), round(float(encoder_pixels(vit, y, inverse=True)[0, 0, 0, 0]), 6)
        (0.0, 0.485)
    """
    stats = getattr(encoder, "_pixel_stats", None)  # ViT's (mean, std) of its `pixel_norm`, or None
    return images if stats is None else standardise(images, stats, inverse)


def standardise(images, stats, inverse=False):
    """`(images - mean) / std` per channel for `stats = (mean, std)`; `inverse`: `images * std + mean`.

    Example:
        >>> from keras_ssl.layers.masking import standardise
        >>> x = np.full((1, 2, 2, 3), 0.5, "float32")
        >>> float(standardise(x, ((0.25, 0.25, 0.25), (0.5, 0.5, 0.5)))[0, 0, 0, 0])
        0.5
    """
    mean, std = (ops.convert_to_tensor(v, images.dtype) for v in stats)
    return ops.add(ops.multiply(images, std), mean) if inverse else ops.divide(ops.subtract(images, mean), std)
