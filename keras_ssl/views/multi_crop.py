"""The multi-crop papers' views: two global crops and smaller local ones (SwAV, DINO, iBOT, DINOv2,
MSN, DeepCluster v2, ReSSL)."""

import keras

from keras_ssl.views.makers import MultiCrop, ViewMaker
from keras_ssl.views.recipes import BYOL_JITTER, _with_min_scale, ressl_views
from keras_ssl.views.seeds import SeedStream


def multi_crop_views(
    image_size,
    *,
    channels=3,
    local_size=None,
    num_local=4,
    global_scale=(0.14, 1.0),
    local_scale=(0.05, 0.14),
    global_blur=(0.5, 0.5),
    local_blur=0.5,
    global_solarize=(0.0, 0.0),
    color_strength=None,
    min_crop_scale=None,
    horizontal_flip=True,
    seed=None,
):
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
        >>> views = keras_ssl.views.multi_crop_views(16, num_local=4, seed=0)
        >>> views.num_global, views.num_local, views.view_shapes((16, 16, 3))
        (2, 4, [(16, 16, 3), (16, 16, 3), (8, 8, 3), (8, 8, 3), (8, 8, 3), (8, 8, 3)])
    """
    big = image_size > 32
    blur = [float(r) if big else 0.0 for r in (*global_blur, *[local_blur] * num_local)]
    return MultiCrop(
        image_size,
        local_size or max(1, image_size // 2),
        num_global=2,
        num_local=num_local,
        global_scale=_with_min_scale(global_scale, min_crop_scale),
        local_scale=_with_min_scale(local_scale, min_crop_scale),
        channels=channels,
        color_strength=(1.0 if big else 0.5) if color_strength is None else color_strength,
        horizontal_flip=horizontal_flip,
        blur_rates=blur,
        solarize_rates=[*global_solarize, *[0.0] * num_local],
        seed=seed,
    )


def dino_views(image_size, **options):
    """DINO's multi-crop: global scale (0.4, 1), local (0.05, 0.4), BYOL's jitter.

    Blur 1.0 / 0.1 on the two global crops and 0.5 on the local ones (above
    32 px), solarisation 0.2 on the second global crop.

    Args:
        image_size: side of the global crops.
        **options: `multi_crop_views` arguments (they override the recipe's).

    Example:
        >>> views = keras_ssl.views.dino_views(16, local_size=8, seed=0)
        >>> views.global_scale, views.local_scale, views.num_local   # 4 local crops by default
        ((0.4, 1.0), (0.05, 0.4), 4)
    """
    recipe = {
        "global_scale": (0.4, 1.0),
        "local_scale": (0.05, 0.4),
        "global_blur": (1.0, 0.1),
        "local_blur": 0.5,
        "global_solarize": (0.0, 0.2),
        "color_strength": BYOL_JITTER,
    }
    return multi_crop_views(image_size, **{**recipe, **options})


def ibot_views(image_size, **options):
    """iBOT's multi-crop: DINO's augmentations with its ViT-S/16 run's scales, global (0.25, 1)
    and local (0.05, 0.25) (the README's 800-epoch command).

    Args:
        image_size: side of the global crops.
        **options: `multi_crop_views` arguments (they override the recipe's).

    Example:
        >>> views = keras_ssl.views.ibot_views(16, local_size=8, seed=0)
        >>> views.global_scale, views.local_scale
        ((0.25, 1.0), (0.05, 0.25))
    """
    return dino_views(image_size, **{"global_scale": (0.25, 1.0), "local_scale": (0.05, 0.25), **options})


def dinov2_views(image_size, **options):
    """DINOv2's multi-crop (ssl_default_config.yaml): global scale (0.32, 1), local (0.05, 0.32),
    DINO's jitter, blur and solarisation.

    Args:
        image_size: side of the global crops.
        **options: `multi_crop_views` arguments (they override the recipe's).

    Example:
        >>> views = keras_ssl.views.dinov2_views(16, local_size=8, seed=0)
        >>> views.global_scale, views.local_scale
        ((0.32, 1.0), (0.05, 0.32))
    """
    return dino_views(image_size, **{"global_scale": (0.32, 1.0), "local_scale": (0.05, 0.32), **options})


def msn_views(image_size, **options):
    """MSN's views: 2 random crops (target, anchor), scale (0.3, 1), then focal crops (0.05, 0.3).

    `multi_crop_views`' 4 focal crops of half the side (paper: 10 of 96 px for 224 px).

    Colour strength 0.5 and blur 0.5 on every crop (blur above 32 px only).

    Args:
        image_size: side of the two random crops.
        **options: `multi_crop_views` arguments (they override the recipe's).

    Example:
        >>> views = keras_ssl.views.msn_views(16, local_size=8, num_local=2, seed=0)
        >>> views.global_scale, views.local_scale, views.num_local
        ((0.3, 1.0), (0.05, 0.3), 2)
    """
    recipe = {
        "global_scale": (0.3, 1.0),
        "local_scale": (0.05, 0.3),
        "global_blur": (0.5, 0.5),
        "local_blur": 0.5,
        "color_strength": 0.5,
    }
    return multi_crop_views(image_size, **{**recipe, **options})


@keras.saving.register_keras_serializable(package="keras_ssl")
class ReSSLMultiCrop(ViewMaker):
    """ReSSL's multi-crop views: the weak view, the strong one, then `num_local` smaller strong crops.

    The official `Multi_Transform`: the weak and strong full-size views are
    `ressl_views`', and each local crop is a strong (MoCo v2) crop of side
    `local_size` whose area range follows the official rule `(0.2 r, r)`,
    `r = local_size / image_size` (its 96 px crop of 224: (0.086, 0.429)).
    The official crops have four sizes (192, 160, 128, 96 px for 224); here
    they share one, so the encoder runs once per resolution.

    Args:
        image_size: side of the weak and strong views.
        local_size: side of the local crops; defaults to `image_size // 2`.
        num_local: number of local crops (>= 1; official: 4).
        local_scale: area range of the local crops; defaults to `(0.2 r, r)`.
        channels: image channels.
        min_crop_scale: no crop smaller than this fraction (digits: 0.3).
        horizontal_flip: flip half of the views.
        seed: base seed.

    Example:
        >>> from keras_ssl.views import ReSSLMultiCrop
        >>> views = ReSSLMultiCrop(16, num_local=2, seed=0)
        >>> [tuple(v.shape) for v in views(images, training=True)][1:], views.local_scale
        ([(8, 16, 16, 3), (8, 8, 8, 3), (8, 8, 8, 3)], (0.1, 0.5))
    """

    num_global = 2

    def __init__(
        self,
        image_size,
        local_size=None,
        num_local=4,
        local_scale=None,
        channels=3,
        min_crop_scale=None,
        horizontal_flip=True,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.local_size = int(local_size or max(1, self.image_size // 2))
        if not 1 <= self.local_size <= self.image_size or int(num_local) < 1:
            raise ValueError(
                f"`local_size` must be in [1, image_size={self.image_size}] and `num_local` >= 1, "
                f"got {local_size} and {num_local}."
            )
        self.num_local, ratio = int(num_local), self.local_size / self.image_size
        low, high = local_scale or (0.2 * ratio, ratio)
        if min_crop_scale is not None:
            low = max(float(min_crop_scale), low)
            high = max(low, high)
        self.local_scale = (round(float(low), 6), round(float(high), 6))
        self.channels, self.min_crop_scale, self.seed = int(channels), min_crop_scale, seed
        self.horizontal_flip = bool(horizontal_flip)
        seeds = SeedStream(seed)
        options = dict(channels=self.channels, horizontal_flip=self.horizontal_flip)
        self.pair = ressl_views(self.image_size, min_crop_scale=min_crop_scale, seed=seeds(), **options)
        self.local = MultiCrop(
            self.local_size,
            self.local_size,
            num_global=self.num_local,
            num_local=0,
            global_scale=self.local_scale,
            color_strength=0.5,
            blur_rates=[0.5 if self.image_size > 32 else 0.0] * self.num_local,
            seed=seeds(),
            **options,
        )

    def build(self, input_shape):
        self.pair.build(input_shape)
        self.local.build(input_shape)

    def call(self, images, training=True):
        return [*self.pair(images, training=training), *self.local(images, training=training)]

    def view_shapes(self, image_shape):
        size, local, channels = self.image_size, self.local_size, image_shape[-1]
        return [(size, size, channels)] * 2 + [(local, local, channels)] * self.num_local

    def get_config(self):
        names = ("image_size", "local_size", "num_local", "local_scale", "channels", "min_crop_scale", "seed")
        return {**super().get_config(), **{n: getattr(self, n) for n in names}, "horizontal_flip": self.horizontal_flip}
