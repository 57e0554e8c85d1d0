"""Colour jitter as torchvision computes it, per image, in one HSV round trip."""

import keras
from keras import ops


def _pair(value, name):
    if isinstance(value, (int, float)):
        value = (value, value)
    value = tuple(float(v) for v in value)
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"`{name}` must be a (low, high) pair with low <= high, got {value}.")
    return value


def _factor_range(value, name, center, bound=None):
    """torchvision's jitter argument: `x` means `[center - x, center + x]`."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"`{name}` must be >= 0, got {value}.")
        value = (center - value, center + value)
        if center == 1:
            value = (max(value[0], 0.0), value[1])
    low, high = _pair(value, name)
    if center == 1 and low < 0:
        raise ValueError(f"`{name}` factors must be >= 0, got {(low, high)}.")
    if bound is not None and not -bound <= low <= high <= bound:
        raise ValueError(f"`{name}` must lie in [-{bound}, {bound}], got {(low, high)}.")
    return low, high


def _grayscale(x):
    # ITU-R 601 luma, the weights of torchvision's rgb_to_grayscale
    return 0.299 * x[..., 0:1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:3]


def _blend(x, kind, factor):
    """torchvision's brightness (`kind` 0), contrast (1) or saturation (2): `x` blended with black, its
    mean grey level or its greyscale image; `kind` an int or per image `(B, 1, 1, 1)`."""
    if isinstance(kind, int) and kind == 0:
        target = 0.0
    elif isinstance(kind, int):
        gray = _grayscale(x)
        target = ops.mean(gray, axis=(1, 2, 3), keepdims=True) if kind == 1 else gray
    else:
        gray = _grayscale(x)
        target = ops.where(kind == 0, 0.0, ops.where(kind == 1, ops.mean(gray, axis=(1, 2, 3), keepdims=True), gray))
    return ops.clip(target + factor * (x - target), 0.0, 1.0)


def _shift_hue(x, shift):
    """Rotates the HSV hue of RGB images in [0, 1] by `shift` turns, `(B, 1, 1)`."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    value = ops.max(x, axis=-1)
    chroma = value - ops.min(x, axis=-1)
    saturation = chroma / ops.where(value > 0, value, 1.0)
    safe = ops.where(chroma > 0, chroma, 1.0)
    hue = ops.where(
        value == r,
        (g - b) / safe,
        ops.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe),
    )
    hue = ops.where(chroma > 0, hue / 6.0, 0.0) + shift
    hue6 = 6.0 * (hue - ops.floor(hue))
    # Hexcone HSV -> RGB without branches: channel n in (5, 3, 1) for R, G, B.
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = ops.mod(n + hue6, 6.0)
        channels.append(value - value * saturation * ops.clip(ops.minimum(k, 4.0 - k), 0.0, 1.0))
    return ops.stack(channels, axis=-1)


@keras.saving.register_keras_serializable(package="keras_ssl")
class ColorJitter(keras.layers.Layer):
    """torchvision's `ColorJitter` with its own random factors for every image.

    Brightness scales the image, contrast blends it with its mean grey
    level, saturation with its greyscale version, and hue rotates its HSV
    hue, as torchvision does (and in torchvision's formulas, so strengths
    carry over from PyTorch recipes). The four run in a random order drawn
    per image, as torchvision's (and SimCLR's and BYOL's official jitter),
    or in that fixed order. Images are RGB floats in [0, 1] and stay in it.

    Args:
        brightness: `x` draws factors in `[max(0, 1 - x), 1 + x]`; or a
            `(low, high)` range. 0 skips it.
        contrast: same form as `brightness`.
        saturation: same form as `brightness`.
        hue: `h` draws shifts in `[-h, h]` turns of the colour wheel, with
            `0 <= h <= 0.5`; or a `(low, high)` range.
        random_order: a random order of the four per image (uniform over
            the orders of those that are on); False: the order above.
        seed: integer seed of the layer's `SeedGenerator`.

    Example:
        >>> jitter = keras_ssl.views.ColorJitter(0.4, 0.4, 0.4, 0.1, seed=0)   # SimCLR, s = 0.5
        >>> out = jitter(images, training=True)
        >>> tuple(out.shape), bool(ops.min(out) >= 0 and ops.max(out) <= 1)
        ((8, 16, 16, 3), True)
        >>> bool(np.array_equal(jitter(images, training=False), images))   # inference: unchanged
        True
    """

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, seed=None, random_order=True, **kwargs):
        super().__init__(**kwargs)
        self.brightness = _factor_range(brightness, "brightness", 1)
        self.contrast = _factor_range(contrast, "contrast", 1)
        self.saturation = _factor_range(saturation, "saturation", 1)
        self.hue = _factor_range(hue, "hue", 0, bound=0.5)
        self.seed, self.random_order = seed, bool(random_order)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _draw(self, batch, low_high):
        low, high = low_high
        return keras.random.uniform((batch, 1, 1, 1), low, high, seed=self.seed_generator)

    def call(self, images, training=True):
        if images.shape[-1] != 3:
            raise ValueError(f"ColorJitter needs RGB images (3 channels), got shape {images.shape}.")
        if not training:
            return images
        x = ops.cast(images, "float32")
        batch = ops.shape(x)[0]
        # The factors are drawn in torchvision's order, whatever order the transforms run in.
        ranges = (self.brightness, self.contrast, self.saturation)
        blends = [(kind, self._draw(batch, r)) for kind, r in enumerate(ranges) if r != (1.0, 1.0)]
        shift = None if self.hue == (0.0, 0.0) else self._draw(batch, self.hue)[..., 0]
        if not self.random_order or len(blends) + (shift is not None) < 2:
            for kind, factor in blends:
                x = _blend(x, kind, factor)
            return ops.cast(x if shift is None else _shift_hue(x, shift), self.compute_dtype)
        # Ranks of i.i.d. uniforms give each image a uniform random order. The three blends are one
        # formula, so each step is one blend with each image's own kind and factor; the HSV round trip,
        # the costly one, runs once, after the first `hue_position` blends.
        draws = keras.random.uniform((batch, len(blends) + 1), seed=self.seed_generator)
        order = ops.argsort(draws[:, :-1], axis=1)
        kinds = ops.take(ops.array([kind for kind, _ in blends], "int32"), order)
        factors = ops.take_along_axis(ops.concatenate([f[:, :, 0, 0] for _, f in blends], axis=1), order, axis=1)

        def run(x, active=None):
            for step in range(len(blends)):
                factor = ops.reshape(factors[:, step], (-1, 1, 1, 1))
                y = _blend(x, ops.reshape(kinds[:, step], (-1, 1, 1, 1)), factor)
                x = y if active is None else ops.where(active(step), y, x)
            return x

        if shift is None:
            return ops.cast(run(x), self.compute_dtype)
        hue_position = ops.sum(ops.cast(draws[:, :-1] < draws[:, -1:], "int32"), axis=1)
        hue_position = ops.reshape(hue_position, (-1, 1, 1, 1))
        x = _shift_hue(run(x, lambda step: step < hue_position), shift)
        return ops.cast(run(x, lambda step: step >= hue_position), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            brightness=self.brightness,
            contrast=self.contrast,
            saturation=self.saturation,
            hue=self.hue,
            seed=self.seed,
            random_order=self.random_order,
        )
        return config


def color_jitter(strength=0.5, seed=None):
    """SimCLR's colour jitter: brightness, contrast, saturation `0.8 s`, hue `0.2 s`.

    Args:
        strength: SimCLR's colour strength `s` (0.5 for CIFAR, 1.0 ImageNet),
            or the four factors `(brightness, contrast, saturation, hue)`
            themselves (BYOL and DINO: (0.4, 0.4, 0.2, 0.1)).
        seed: integer seed.

    Returns:
        A `ColorJitter` layer.

    Example:
        >>> jitter = keras_ssl.views.color_jitter(0.5, seed=2)   # ColorJitter(0.4, 0.4, 0.4, 0.1)
        >>> jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue
        ((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
    """
    if isinstance(strength, (tuple, list)):
        if len(strength) != 4:
            raise ValueError(f"jitter factors must be (brightness, contrast, saturation, hue), got {strength}.")
        return ColorJitter(*(float(v) for v in strength), seed=seed)
    s = float(strength)
    if s < 0:
        raise ValueError(f"`strength` must be >= 0, got {s}.")
    return ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5), seed=seed)
