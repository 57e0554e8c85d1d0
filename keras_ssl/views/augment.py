"""Augmentations that run inside the training step, compiled, per sample.

Images are float in [0, 1], channels last. The geometric part (resized crop,
flip) is ours: Keras's geometric layers draw one crop per batch and turn the
whole step eager. So is the colour jitter: torchvision's formulas, per image,
with one HSV round trip (Keras's jitter does two and maps strengths
differently). Grayscale, blur and solarisation are Keras's layers.
"""

import math

import keras
from keras import ops

from keras_ssl.views.color import _pair, color_jitter
from keras_ssl.views.seeds import SeedStream


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
        >>> crop = keras_ssl.views.RandomResizedCrop(8, scale=(0.2, 1.0), seed=1)
        >>> views = crop(images, training=True)   # (B, 8, 8, C)
        >>> tuple(views.shape)
        (8, 8, 8, 3)
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
        uniform = lambda shape, lo=0.0, hi=1.0: keras.random.uniform(shape, lo, hi, seed=self.seed_generator)
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
        top = ops.where(found, ops.floor(uniform((batch,)) * (height - h + 1.0)), ops.floor((height - h) / 2.0))
        left = ops.where(found, ops.floor(uniform((batch,)) * (width - w + 1.0)), ops.floor((width - w) / 2.0))
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
        >>> blurred = keras_ssl.views.GaussianBlur(3, seed=0)(images, training=True)
        >>> tuple(blurred.shape), bool(ops.std(blurred) < ops.std(images))   # smoother
        ((8, 16, 16, 3), True)
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
class Solarize(keras.layers.Layer):
    """Solarisation of images in [0, 1]: every value at or above `threshold` becomes `1 - value`.

    The papers' fixed threshold: BYOL's official `tf.where(image < 0.5, image, 1 - image)`,
    torchvision's `RandomSolarize(threshold=128)`. Keras's `Solarization(threshold_factor=(0.5, 0.5))`
    is not that: Keras 3.15 draws its threshold uniformly between 0.5 and 127.5 of 255 (it scales only
    the upper bound), so it inverts darker pixels too.

    Args:
        threshold: in (0, 1]; 0.5 in every paper.

    Example:
        >>> solarize = keras_ssl.views.Solarize()
        >>> [round(float(v), 2) for v in np.ravel(solarize(np.array([[[[0.2, 0.5, 0.9]]]], "float32")))]
        [0.2, 0.5, 0.1]
    """

    def __init__(self, threshold=0.5, **kwargs):
        super().__init__(**kwargs)
        if not 0 < threshold <= 1:
            raise ValueError(f"`threshold` must be in (0, 1], got {threshold}.")
        self.threshold = float(threshold)

    def call(self, images, training=True):
        if not training:
            return images
        return ops.where(images < self.threshold, images, 1.0 - images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(threshold=self.threshold)
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
        >>> jitter = keras_ssl.views.RandomApply(keras.layers.RandomColorJitter(
        ...     value_range=(0, 1), contrast_factor=0.4), rate=0.8, seed=3)
        >>> out = jitter(images, training=True)
        >>> tuple(out.shape)
        (8, 16, 16, 3)
        >>> never = keras_ssl.views.RandomApply(keras.layers.RandomGrayscale(1.0), rate=0.0, seed=3)
        >>> bool(np.array_equal(never(images, training=True), images))   # rate 0: images unchanged
        True
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
        config.update(layer=keras.saving.serialize_keras_object(self.layer), rate=self.rate, seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


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
        >>> augment = keras_ssl.views.simclr_augmenter(16, seed=0)
        >>> [layer.__class__.__name__ for layer in augment.layers]
        ['RandomResizedCrop', 'RandomApply', 'RandomGrayscale']
        >>> v1, v2 = keras_ssl.views.TwoViews(augment)(images, training=True)
        >>> tuple(v1.shape), bool(ops.min(v1) >= 0 and ops.max(v1) <= 1)
        ((8, 16, 16, 3), True)
    """
    seeds = SeedStream(seed)
    layers = [RandomResizedCrop(image_size, scale=crop_scale, horizontal_flip=horizontal_flip, seed=seeds())]
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
        seeds()  # the seed Keras's Solarization took: the later layers keep theirs
        layers.append(RandomApply(Solarize(0.5), solarize_rate, seeds()))
    return keras.Sequential(layers, name=name)


def blur_kernel(image_size):
    """The papers' blur kernel side: ~10 % of the image side, odd (23 at 224 px, 9 at 96 px).

    Example:
        >>> keras_ssl.views.blur_kernel(224), keras_ssl.views.blur_kernel(96), keras_ssl.views.blur_kernel(16)
        (23, 9, 3)
    """
    return max(3, (int(image_size) // 10) | 1)
