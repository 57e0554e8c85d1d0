"""Augmentations that run inside the training step, compiled, per sample.

Images are float in [0, 1], channels last. The geometric part (resized crop,
flip) is ours: Keras's geometric layers draw one crop per batch and turn the
whole step eager. So is the colour jitter: torchvision's formulas, per image,
with one HSV round trip (Keras's jitter does two and maps strengths
differently). Grayscale, blur and solarisation are Keras's layers.
"""

import math

import keras
import numpy as np
from keras import ops


class SeedStream:
    """Distinct integer seeds derived from one base seed, one per call.

    Two Keras random layers given the same integer seed draw the same
    numbers (flip and grayscale perfectly correlated, measured), so every
    random layer gets its own seed from a stream. Seeds are hashed from
    `(base, count)` with NumPy's `SeedSequence`, so streams nested inside
    each other (a model's stream seeding an augmenter's) never collide.

    Args:
        seed: base seed; `None` makes every call return `None` (random).

    Example:
        >>> seeds = SeedStream(0)
        >>> crop = RandomResizedCrop(32, seed=seeds())
        >>> jitter = color_jitter(0.5, seed=seeds())
    """

    def __init__(self, seed=None):
        self.seed = None if seed is None else int(seed)
        self.count = 0

    def __call__(self):
        if self.seed is None:
            return None
        self.count += 1
        state = np.random.SeedSequence([self.seed, self.count]).generate_state(1)[0]
        return int(state >> 1)  # non-negative int32


def _pair(value, name):
    if isinstance(value, (int, float)):
        value = (value, value)
    value = tuple(float(v) for v in value)
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"`{name}` must be a (low, high) pair with low <= high, got {value}.")
    return value


def _interpolation_matrix(start, length, in_size, out_size):
    """Bilinear resampling weights `(B, out_size, in_size)` for a crop.

    Output pixel `j` samples the source at
    `start + (j + 0.5) * length / out_size - 0.5` (half-pixel centres, as
    `align_corners=False`), clamped to the image; the triangle kernel
    `max(0, 1 - |x - k|)` gives the two bilinear weights.
    """
    j = ops.cast(ops.arange(out_size), "float32") + 0.5
    source = start[:, None] + j[None, :] * (length[:, None] / out_size) - 0.5
    source = ops.clip(source, 0.0, in_size - 1.0)
    k = ops.cast(ops.arange(in_size), "float32")
    return ops.relu(1.0 - ops.abs(source[:, :, None] - k[None, None, :]))


@keras.saving.register_keras_serializable(package="keras_ssl")
class RandomResizedCrop(keras.layers.Layer):
    """Per-sample random resized crop (and optional horizontal flip).

    Each image gets its own crop, drawn as torchvision's
    `RandomResizedCrop.get_params` draws it: an area fraction uniform in
    `scale` and an aspect ratio log-uniform in `ratio`, sides rounded to
    whole pixels, up to 10 tries until the box fits in the image (else the
    centre crop with the ratio clamped), and a top-left corner uniform over
    the valid integer positions. The 10 tries are drawn at once and the
    first valid one is taken, so it compiles. The crop is resized
    bilinearly to `size` by two small interpolation matrices per image
    applied with `einsum`, on every backend and for any output size
    (multi-crop).

    Args:
        size: output side (int) or `(height, width)`.
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop's width / height.
        horizontal_flip: also flip each image with probability 0.5.
        seed: integer seed of this layer's `SeedGenerator`.

    Example:
        >>> crop = RandomResizedCrop(32, scale=(0.2, 1.0), seed=1)
        >>> views = crop(images, training=True)   # (B, 32, 32, C)
    """

    def __init__(
        self,
        size,
        scale=(0.08, 1.0),
        ratio=(3 / 4, 4 / 3),
        horizontal_flip=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        size = (size, size) if isinstance(size, int) else tuple(size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"`size` must be a positive int or (height, width), got {size}.")
        self.size = tuple(int(s) for s in size)
        self.scale = _pair(scale, "scale")
        self.ratio = _pair(ratio, "ratio")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"`scale` must lie in (0, 1], got {self.scale}.")
        if self.ratio[0] <= 0:
            raise ValueError(f"`ratio` must be positive, got {self.ratio}.")
        self.horizontal_flip = bool(horizontal_flip)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def sample_boxes(self, batch, height, width):
        """Crop boxes `(top, left, box_height, box_width)`, `(batch,)` float32 each.

        The values are whole pixels, distributed as torchvision's sampler
        (see the class doc).
        """
        tries = 10
        uniform = lambda shape, lo=0.0, hi=1.0: keras.random.uniform(  # noqa: E731
            shape, lo, hi, seed=self.seed_generator
        )
        area = uniform((batch, tries), *self.scale) * float(height * width)
        aspect = ops.exp(uniform((batch, tries), math.log(self.ratio[0]), math.log(self.ratio[1])))
        w = ops.round(ops.sqrt(area * aspect))
        h = ops.round(ops.sqrt(area / aspect))
        valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = ops.expand_dims(ops.argmax(ops.cast(valid, "int32"), axis=1), 1)
        found = ops.any(valid, axis=1)
        # torchvision's fallback: the whole image, its ratio clamped to `ratio`.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fallback_w, fallback_h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fallback_w, fallback_h = round(height * self.ratio[1]), height
        else:
            fallback_w, fallback_h = width, height
        w = ops.where(found, ops.take_along_axis(w, first, axis=1)[:, 0], float(fallback_w))
        h = ops.where(found, ops.take_along_axis(h, first, axis=1)[:, 0], float(fallback_h))
        top = ops.where(found, ops.floor(uniform((batch,)) * (height - h + 1.0)),
                        ops.floor((height - h) / 2.0))
        left = ops.where(found, ops.floor(uniform((batch,)) * (width - w + 1.0)),
                         ops.floor((width - w) / 2.0))
        return top, left, h, w

    def call(self, images, training=True):
        height, width = images.shape[1], images.shape[2]
        if height is None or width is None:
            raise ValueError("RandomResizedCrop needs images with a static height and width.")
        if not training:
            return ops.image.resize(images, self.size)
        batch = ops.shape(images)[0]
        y0, x0, crop_h, crop_w = self.sample_boxes(batch, height, width)
        if self.horizontal_flip:
            # A flip is a crop read right to left: start at the far edge, negative length.
            flip = keras.random.uniform((batch,), seed=self.seed_generator) < 0.5
            x0 = ops.where(flip, x0 + crop_w, x0)
            crop_w = ops.where(flip, -crop_w, crop_w)
        rows = _interpolation_matrix(y0, crop_h, height, self.size[0])
        cols = _interpolation_matrix(x0, crop_w, width, self.size[1])
        images = ops.cast(images, "float32")
        out = ops.einsum("bih,bhwc,bjw->bijc", rows, images, cols)
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            size=self.size,
            scale=self.scale,
            ratio=self.ratio,
            horizontal_flip=self.horizontal_flip,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ssl")
class GaussianBlur(keras.layers.Layer):
    """Gaussian blur with a sigma drawn per image, as SimCLR, BYOL and DINO blur.

    Keras's `RandomGaussianBlur` draws one sigma per batch; the papers draw
    one per image (torchvision's `GaussianBlur`). The kernel is separable,
    applied as a sum of shifted images weighted per image, with reflected
    borders (torchvision's padding).

    Args:
        kernel_size: odd side of the kernel (the papers: ~10 % of the image
            side, 23 at 224 px).
        sigma: `(low, high)` range of the per-image standard deviation.
        seed: integer seed.

    Example:
        >>> blurred = GaussianBlur(9, seed=0)(images, training=True)
    """

    def __init__(self, kernel_size, sigma=(0.1, 2.0), seed=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be a positive odd int, got {kernel_size}.")
        self.sigma = _pair(sigma, "sigma")
        if not 0 < self.sigma[0] <= self.sigma[1]:
            raise ValueError(f"`sigma` must be (low, high) with 0 < low <= high, got {sigma}.")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training or self.kernel_size == 1:
            return images
        radius = self.kernel_size // 2
        batch = ops.shape(images)[0]
        sigma = keras.random.uniform((batch, 1), *self.sigma, seed=self.seed_generator)
        offsets = ops.cast(ops.arange(-radius, radius + 1), "float32")
        weights = ops.exp(-ops.square(offsets)[None, :] / (2.0 * ops.square(sigma)))
        weights = ops.cast(weights / ops.sum(weights, axis=1, keepdims=True), images.dtype)
        for axis in (1, 2):
            size = images.shape[axis]
            pad = [[0, 0]] * 4
            pad[axis] = [radius, radius]
            padded = ops.pad(images, pad, mode="reflect")
            total = 0
            for k in range(self.kernel_size):
                part = padded[:, k : k + size] if axis == 1 else padded[:, :, k : k + size]
                total = total + weights[:, k, None, None, None] * part
            images = total
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, sigma=self.sigma, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_ssl")
class RandomApply(keras.layers.Layer):
    """Apply `layer` to each image independently with probability `rate`.

    The layer runs on the whole batch and a per-image coin picks its output
    or the input. The layer gets a copy of its input because some Keras
    colour layers modify their input in place on PyTorch.

    Args:
        layer: a Keras layer mapping a batch of images to a batch of images.
        rate: probability of applying it to an image, in [0, 1].
        seed: integer seed of the coin's `SeedGenerator`.

    Example:
        >>> jitter = RandomApply(keras.layers.RandomColorJitter(
        ...     value_range=(0, 1), contrast_factor=0.4), rate=0.8, seed=3)
    """

    def __init__(self, layer, rate=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate <= 1:
            raise ValueError(f"`rate` must be in [0, 1], got {rate}.")
        self.layer = layer
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)

    def call(self, images, training=True):
        if not training or self.rate == 0:
            return images
        applied = self.layer(ops.copy(images), training=True)
        if self.rate == 1:
            return applied
        coin = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), seed=self.seed_generator)
        return ops.where(coin < self.rate, ops.cast(applied, images.dtype), images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            layer=keras.saving.serialize_keras_object(self.layer), rate=self.rate, seed=self.seed
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


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
    carry over from PyTorch recipes). The four run in that fixed order;
    torchvision draws a random order per image. Images are RGB floats in
    [0, 1] and stay in it.

    Args:
        brightness: `x` draws factors in `[max(0, 1 - x), 1 + x]`; or a
            `(low, high)` range. 0 skips it.
        contrast: same form as `brightness`.
        saturation: same form as `brightness`.
        hue: `h` draws shifts in `[-h, h]` turns of the colour wheel, with
            `0 <= h <= 0.5`; or a `(low, high)` range.
        seed: integer seed of the layer's `SeedGenerator`.

    Example:
        >>> jitter = ColorJitter(0.4, 0.4, 0.4, 0.1, seed=0)   # SimCLR, s = 0.5
        >>> out = jitter(images, training=True)
    """

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.brightness = _factor_range(brightness, "brightness", 1)
        self.contrast = _factor_range(contrast, "contrast", 1)
        self.saturation = _factor_range(saturation, "saturation", 1)
        self.hue = _factor_range(hue, "hue", 0, bound=0.5)
        self.seed = seed
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
        if self.brightness != (1.0, 1.0):
            x = ops.clip(x * self._draw(batch, self.brightness), 0.0, 1.0)
        if self.contrast != (1.0, 1.0):
            mean = ops.mean(_grayscale(x), axis=(1, 2, 3), keepdims=True)
            x = ops.clip(mean + self._draw(batch, self.contrast) * (x - mean), 0.0, 1.0)
        if self.saturation != (1.0, 1.0):
            gray = _grayscale(x)
            x = ops.clip(gray + self._draw(batch, self.saturation) * (x - gray), 0.0, 1.0)
        if self.hue != (0.0, 0.0):
            x = _shift_hue(x, self._draw(batch, self.hue)[..., 0])
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            brightness=self.brightness, contrast=self.contrast, saturation=self.saturation,
            hue=self.hue, seed=self.seed,
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
        >>> jitter = color_jitter(0.5, seed=2)   # ColorJitter(0.4, 0.4, 0.4, 0.1)
    """
    if isinstance(strength, (tuple, list)):
        if len(strength) != 4:
            raise ValueError(f"jitter factors must be (brightness, contrast, saturation, hue), got {strength}.")
        return ColorJitter(*(float(v) for v in strength), seed=seed)
    s = float(strength)
    if s < 0:
        raise ValueError(f"`strength` must be >= 0, got {s}.")
    return ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5), seed=seed)


def simclr_augmenter(
    image_size,
    *,
    channels=3,
    crop_scale=(0.08, 1.0),
    color_strength=0.5,
    jitter_rate=0.8,
    grayscale_rate=0.2,
    blur_rate=0.0,
    solarize_rate=0.0,
    horizontal_flip=True,
    seed=None,
    name=None,
):
    """SimCLR's view: resized crop, flip, colour jitter, grayscale, blur.

    Args:
        image_size: output side of each view.
        channels: image channels; colour jitter and grayscale need 3 and are
            skipped for 1-channel images.
        crop_scale: area range of the resized crop.
        color_strength: SimCLR's colour strength `s`, or the four jitter
            factors (see `color_jitter`).
        jitter_rate: probability of colour jitter (0.8 in SimCLR).
        grayscale_rate: probability of grayscale (0.2 in SimCLR).
        blur_rate: probability of Gaussian blur (0.5 in SimCLR on ImageNet;
            0 for CIFAR-size images): `GaussianBlur` with a kernel of ~10 %
            of the side (`blur_kernel`) and sigma in [0.1, 2] per image.
        solarize_rate: probability of solarisation (BYOL's second view uses 0.2).
        horizontal_flip: flip half of the views (off for digits, where a
            flip changes the class).
        seed: base seed; each random layer gets its own from a `SeedStream`.
        name: layer name.

    Returns:
        A `keras.Sequential` mapping `(B, H, W, C)` in [0, 1] to views
        `(B, image_size, image_size, C)`.

    Example:
        >>> augment = simclr_augmenter(32, seed=0)
        >>> views = TwoViews(augment)(x, training=True)
    """
    seeds = SeedStream(seed)
    layers = [
        RandomResizedCrop(image_size, scale=crop_scale, horizontal_flip=horizontal_flip, seed=seeds())
    ]
    if channels == 3:
        if jitter_rate > 0:
            layers.append(RandomApply(color_jitter(color_strength, seeds()), jitter_rate, seeds()))
        if grayscale_rate > 0:
            layers.append(keras.layers.RandomGrayscale(grayscale_rate, seed=seeds()))
    elif channels != 1:
        raise ValueError(f"`channels` must be 1 or 3, got {channels}.")
    if blur_rate > 0:
        blur = GaussianBlur(blur_kernel(image_size), sigma=(0.1, 2.0), seed=seeds())
        layers.append(RandomApply(blur, blur_rate, seeds()))
    if solarize_rate > 0:
        solarize = keras.layers.Solarization(
            addition_factor=0.0, threshold_factor=(0.5, 0.5), value_range=(0, 1), seed=seeds()
        )
        layers.append(RandomApply(solarize, solarize_rate, seeds()))
    return keras.Sequential(layers, name=name)


def blur_kernel(image_size):
    """The papers' blur kernel side: ~10 % of the image side, odd (23 at 224 px, 9 at 96 px).

    Example:
        >>> blur_kernel(224)
        23
    """
    return max(3, (int(image_size) // 10) | 1)


def _output_shape(layer, input_shape):
    try:
        shape = layer.compute_output_shape(input_shape)
    except Exception:  # a layer without compute_output_shape: trace it
        shape = layer.compute_output_spec(keras.KerasTensor(input_shape)).shape
    return tuple(shape)


class ViewMaker(keras.layers.Layer):
    """Base of the view makers: a layer mapping a batch to a *list* of views.

    Subclasses set `num_global` (full-size views, first in the list) and
    `num_local` (smaller views after them) and implement `call` and
    `view_shapes`. A method checks these against what it needs when it is
    built (`SSLModel`), so a wrong view maker fails at construction.
    """

    num_global = 1
    num_local = 0

    def view_shapes(self, image_shape):
        """`(height, width, channels)` of each view made from images of `image_shape`."""
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        # The list of view shapes: what `model.summary()` shows for the view maker.
        return [(None, *shape) for shape in self.view_shapes(tuple(input_shape[1:]))]


@keras.saving.register_keras_serializable(package="keras_ssl")
class OneView(ViewMaker):
    """One augmented view of each image (MAE, CLIP).

    Args:
        augment: a layer mapping a batch of images to a batch of views.

    Example:
        >>> views = OneView(RandomResizedCrop(32, scale=(0.2, 1.0)))
        >>> [v] = views(images, training=True)
    """

    def __init__(self, augment, **kwargs):
        super().__init__(**kwargs)
        if not callable(augment):
            raise TypeError(f"`augment` must be a Keras layer, got {type(augment).__name__}.")
        self.augment = augment

    def build(self, input_shape):
        if not self.augment.built:
            self.augment.build(input_shape)

    def call(self, images, training=True):
        return [self.augment(images, training=training)]

    def view_shapes(self, image_shape):
        return [_output_shape(self.augment, (None, *image_shape))[1:]]

    def get_config(self):
        return {**super().get_config(), "augment": keras.saving.serialize_keras_object(self.augment)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["augment"] = keras.saving.deserialize_keras_object(config["augment"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_ssl")
class TwoViews(ViewMaker):
    """Two augmented views of each image, from one pipeline or two.

    `TwoViews(aug)` draws both views from the same family (SimCLR, SimSiam,
    Barlow Twins, VICReg, MoCo v2); `TwoViews(aug_1, aug_2)` gives each view
    its own pipeline (BYOL's asymmetric blur and solarisation). Each
    pipeline gets its own copy of the batch, since some Keras colour layers
    modify their input in place on PyTorch.

    Args:
        augment: layer making the first view (and the second, if
            `augment_2` is None).
        augment_2: layer making the second view.

    Example:
        >>> views = TwoViews(simclr_augmenter(32, seed=0))
        >>> v1, v2 = views(images, training=True)
    """

    num_global = 2

    def __init__(self, augment, augment_2=None, **kwargs):
        super().__init__(**kwargs)
        for arg in (augment, augment_2):
            if arg is not None and not callable(arg):
                raise TypeError(f"TwoViews takes Keras layers, got {type(arg).__name__}.")
        self.augment, self.augment_2 = augment, augment_2

    def _pipelines(self):
        return [self.augment, self.augment_2 or self.augment]

    def build(self, input_shape):
        for augment in self._pipelines():
            if not augment.built:
                augment.build(input_shape)

    def call(self, images, training=True):
        return [augment(ops.copy(images), training=training) for augment in self._pipelines()]

    def view_shapes(self, image_shape):
        return [_output_shape(a, (None, *image_shape))[1:] for a in self._pipelines()]

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {**super().get_config(), "augment": serialize(self.augment),
                "augment_2": None if self.augment_2 is None else serialize(self.augment_2)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("augment", "augment_2"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def _with_min_scale(scale, min_crop_scale):
    """`scale` with no crop smaller than `min_crop_scale` (None: unchanged)."""
    if min_crop_scale is None:
        return tuple(scale)
    low = max(float(min_crop_scale), scale[0])
    return (low, max(low, scale[1]))


def simclr_views(image_size, *, channels=3, crop_scale=(0.08, 1.0), min_crop_scale=None,
                 horizontal_flip=True, color_strength=None, blur_rate=0.5, seed=None):
    """Two views from SimCLR's pipeline (`simclr_augmenter`): SimCLR, MoCo v2, SimSiam.

    Above 32 px this is the ImageNet recipe: colour strength 1.0 and blur
    with probability `blur_rate` (kernel ~10 % of the side); at CIFAR size
    (32 px and below) strength 0.5 and no blur, as the papers' CIFAR runs.

    Args:
        image_size: output side of each view.
        channels: image channels.
        crop_scale: area range of the resized crop (SimSiam and MoCo v2: (0.2, 1)).
        min_crop_scale: no crop smaller than this fraction (digits: 0.3).
        horizontal_flip: flip half of the views.
        color_strength: colour strength or jitter factors (default 1.0 above
            32 px, 0.5 below; MoCo v2 and SimSiam use 0.5 everywhere).
        blur_rate: blur probability above 32 px (0.5 in SimCLR, MoCo v2, SimSiam).
        seed: base seed.

    Example:
        >>> v1, v2 = simclr_views(32, seed=0)(images, training=True)
    """
    big = image_size > 32
    if color_strength is None:
        color_strength = 1.0 if big else 0.5
    return TwoViews(simclr_augmenter(
        image_size, channels=channels, crop_scale=_with_min_scale(crop_scale, min_crop_scale),
        color_strength=color_strength, blur_rate=blur_rate if big else 0.0,
        horizontal_flip=horizontal_flip, seed=seed))


def crop_view(image_size, *, channels=3, crop_scale=(0.2, 1.0), min_crop_scale=None,
              horizontal_flip=True, seed=None):
    """One view: a random resized crop and flip, no colour (MAE; CLIP uses (0.5, 1)).

    Args:
        image_size: output side of the view.
        channels: image channels (unused: no colour augmentation).
        crop_scale: area range of the crop.
        min_crop_scale: no crop smaller than this fraction.
        horizontal_flip: flip half of the views.
        seed: seed of the crop.

    Example:
        >>> [v] = crop_view(32, seed=0)(images, training=True)
    """
    return OneView(RandomResizedCrop(
        image_size, scale=_with_min_scale(crop_scale, min_crop_scale),
        horizontal_flip=horizontal_flip, seed=seed))


def multi_crop_views(image_size, *, channels=3, local_size=None, num_local=4,
                     global_scale=(0.14, 1.0), local_scale=(0.05, 0.14), global_blur=(0.5, 0.5),
                     local_blur=0.5, global_solarize=(0.0, 0.0), color_strength=None,
                     min_crop_scale=None, horizontal_flip=True, seed=None):
    """Two global and `num_local` local crops (`MultiCrop`), SwAV's recipe by default.

    SwAV blurs every crop with probability 0.5; DINO's recipe passes global
    scale (0.4, 1), local (0.05, 0.4), blur 1.0 / 0.1 on the global crops
    and 0.5 on the local ones, and solarisation 0.2 on the second global
    crop. As `byol_views`, blur is kept only for images larger than 32
    pixels, and the colour strength is 1.0 there (0.5 at CIFAR size).

    Args:
        image_size: side of the global crops.
        channels: image channels.
        local_size: side of the local crops; defaults to `image_size // 2`.
        num_local: number of local crops (SwAV 6, DINO 10 on ImageNet).
        global_scale, local_scale: area ranges.
        global_blur: blur probability of each of the two global crops.
        local_blur: blur probability of each local crop.
        global_solarize: solarisation probability of each global crop.
        color_strength: colour strength or jitter factors (default 1.0 above
            32 px, 0.5 below; DINO: (0.4, 0.4, 0.2, 0.1)).
        min_crop_scale: no crop smaller than this fraction.
        horizontal_flip: flip half of the views.
        seed: base seed.

    Example:
        >>> views = multi_crop_views(32, num_local=4, seed=0)
    """
    big = image_size > 32
    blur = [float(r) if big else 0.0 for r in (*global_blur, *[local_blur] * num_local)]
    return MultiCrop(
        image_size, local_size or max(1, image_size // 2), num_global=2, num_local=num_local,
        global_scale=_with_min_scale(global_scale, min_crop_scale),
        local_scale=_with_min_scale(local_scale, min_crop_scale),
        channels=channels, color_strength=(1.0 if big else 0.5) if color_strength is None else color_strength,
        horizontal_flip=horizontal_flip,
        blur_rates=blur, solarize_rates=[*global_solarize, *[0.0] * num_local], seed=seed,
    )


BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)


def byol_views(image_size, *, channels=3, crop_scale=(0.08, 1.0), min_crop_scale=None,
               horizontal_flip=True, seed=None):
    """BYOL's two asymmetric view pipelines (blur 1.0 / 0.1, solarise 0 / 0.2).

    Colour jitter (0.4, 0.4, 0.2, 0.1) with probability 0.8, as BYOL,
    Barlow Twins, VICReg and NNCLR. Blur is kept only for images larger
    than 32 pixels (kernel ~10 % of the side), as the papers' CIFAR runs.

    Args:
        image_size: output side of each view.
        channels: image channels.
        crop_scale: area range of the resized crop.
        min_crop_scale: no crop smaller than this fraction.
        horizontal_flip: flip half of the views.
        seed: base seed.

    Returns:
        A `TwoViews` with one pipeline per view.

    Example:
        >>> views = byol_views(32, seed=0)
        >>> v1, v2 = views(images, training=True)
    """
    big = image_size > 32
    seeds = SeedStream(seed)
    common = dict(channels=channels, crop_scale=_with_min_scale(crop_scale, min_crop_scale),
                  horizontal_flip=horizontal_flip, color_strength=BYOL_JITTER)
    return TwoViews(
        simclr_augmenter(image_size, blur_rate=1.0 if big else 0.0, seed=seeds(), name="view_1", **common),
        simclr_augmenter(image_size, blur_rate=0.1 if big else 0.0, solarize_rate=0.2, seed=seeds(),
                         name="view_2", **common),
    )


@keras.saving.register_keras_serializable(package="keras_ssl")
class MultiCrop(ViewMaker):
    """Multi-crop views: `num_global` large crops and `num_local` small ones.

    Each view has its own per-sample resized crop, then the shared colour
    pipeline. Views are returned global first, so same-size views are
    consecutive and the engine runs the encoder once per resolution.

    Args:
        global_size: side of the global crops.
        local_size: side of the local crops.
        num_global: number of global crops (2 in SwAV and DINO).
        num_local: number of local crops.
        global_scale: area range of global crops (SwAV's default; DINO
            uses (0.4, 1)).
        local_scale: area range of local crops (SwAV's; DINO (0.05, 0.4)).
        channels: image channels.
        color_strength: SimCLR colour strength, or the four jitter factors.
        horizontal_flip: flip half of the views.
        blur_rates: Gaussian-blur probability of each view, global first
            (DINO: 1.0, 0.1, then 0.5 for every local crop); None: no blur.
        solarize_rates: solarisation probability of each view (DINO: 0,
            0.2, then 0); None: none.
        seed: base seed.

    Example:
        >>> views = MultiCrop(32, 16, num_local=4, seed=0)(images, training=True)
        >>> [v.shape[1] for v in views]   # [32, 32, 16, 16, 16, 16]
    """

    def __init__(
        self,
        global_size,
        local_size,
        num_global=2,
        num_local=6,
        global_scale=(0.14, 1.0),
        local_scale=(0.05, 0.14),
        channels=3,
        color_strength=0.5,
        horizontal_flip=True,
        blur_rates=None,
        solarize_rates=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_global < 1 or num_local < 0:
            raise ValueError(
                f"Need num_global >= 1 and num_local >= 0, got {num_global}, {num_local}."
            )
        self.global_size, self.local_size = int(global_size), int(local_size)
        if not 1 <= self.local_size <= self.global_size:
            raise ValueError(f"`local_size` must be in [1, global_size={self.global_size}], got {local_size}.")
        self.num_global, self.num_local = int(num_global), int(num_local)
        self.global_scale, self.local_scale = _pair(global_scale, "global_scale"), _pair(local_scale, "local_scale")
        self.channels, self.color_strength, self.seed = channels, color_strength, seed
        self.horizontal_flip = bool(horizontal_flip)
        count = self.num_global + self.num_local
        rates = {}
        for name, value in (("blur_rates", blur_rates), ("solarize_rates", solarize_rates)):
            value = [0.0] * count if value is None else [float(r) for r in value]
            if len(value) != count or not all(0 <= r <= 1 for r in value):
                raise ValueError(f"`{name}` must hold {count} probabilities (one per view), got {value}.")
            rates[name] = value
        self.blur_rates, self.solarize_rates = rates["blur_rates"], rates["solarize_rates"]
        seeds = SeedStream(seed)
        self.crops = [
            simclr_augmenter(
                self.global_size if i < num_global else self.local_size,
                channels=channels,
                crop_scale=self.global_scale if i < num_global else self.local_scale,
                color_strength=color_strength,
                blur_rate=self.blur_rates[i],
                solarize_rate=self.solarize_rates[i],
                horizontal_flip=self.horizontal_flip,
                seed=seeds(),
                name=f"view_{i}",
            )
            for i in range(count)
        ]

    def build(self, input_shape):
        for crop in self.crops:
            crop.build(input_shape)

    def call(self, images, training=True):
        return [crop(images, training=training) for crop in self.crops]

    def view_shapes(self, image_shape):
        channels = image_shape[-1]
        return [(self.global_size, self.global_size, channels)] * self.num_global + [
            (self.local_size, self.local_size, channels)] * self.num_local

    def get_config(self):
        config = super().get_config()
        config.update(
            global_size=self.global_size,
            local_size=self.local_size,
            num_global=self.num_global,
            num_local=self.num_local,
            global_scale=self.global_scale,
            local_scale=self.local_scale,
            channels=self.channels,
            color_strength=self.color_strength,
            horizontal_flip=self.horizontal_flip,
            blur_rates=self.blur_rates,
            solarize_rates=self.solarize_rates,
            seed=self.seed,
        )
        return config
