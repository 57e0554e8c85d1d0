"""View makers: layers that map a batch to the *list* of views a method trains on."""

import keras
from keras import ops

from keras_ssl.views.augment import simclr_augmenter
from keras_ssl.views.color import _pair
from keras_ssl.views.seeds import SeedStream


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
        >>> views = keras_ssl.views.OneView(keras_ssl.views.RandomResizedCrop(8, scale=(0.2, 1.0)))
        >>> [v] = views(images, training=True)
        >>> tuple(v.shape)
        (8, 8, 8, 3)
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
        >>> views = keras_ssl.views.TwoViews(keras_ssl.views.simclr_augmenter(16, seed=0))
        >>> v1, v2 = views(images, training=True)
        >>> tuple(v1.shape), tuple(v2.shape), bool(np.array_equal(v1, v2))   # two different views
        ((8, 16, 16, 3), (8, 16, 16, 3), False)
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
        return {
            **super().get_config(),
            "augment": serialize(self.augment),
            "augment_2": None if self.augment_2 is None else serialize(self.augment_2),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("augment", "augment_2"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_ssl")
class ManyViews(ViewMaker):
    """`num_views` augmented views of each image from one pipeline (FastSiam, MMCR, W-MSE).

    Each view is a fresh draw from the same augmentation family, as
    `TwoViews(augment)` draws two.

    Args:
        augment: layer making every view.
        num_views: number of full-size views (>= 2).

    Example:
        >>> views = keras_ssl.views.ManyViews(keras_ssl.views.simclr_augmenter(16, seed=0), num_views=4)
        >>> [tuple(v.shape) for v in views(images, training=True)] == [(8, 16, 16, 3)] * 4
        True
    """

    def __init__(self, augment, num_views=4, **kwargs):
        super().__init__(**kwargs)
        if not callable(augment):
            raise TypeError(f"ManyViews takes a Keras layer, got {type(augment).__name__}.")
        if int(num_views) < 2:
            raise ValueError(f"`num_views` must be >= 2, got {num_views}.")
        self.augment, self.num_views = augment, int(num_views)

    @property
    def num_global(self):
        return self.num_views

    def build(self, input_shape):
        if not self.augment.built:
            self.augment.build(input_shape)

    def call(self, images, training=True):
        # A copy per view: some Keras colour layers modify their input in place on PyTorch.
        return [self.augment(ops.copy(images), training=training) for _ in range(self.num_views)]

    def view_shapes(self, image_shape):
        return [_output_shape(self.augment, (None, *image_shape))[1:]] * self.num_views

    def get_config(self):
        return {
            **super().get_config(),
            "augment": keras.saving.serialize_keras_object(self.augment),
            "num_views": self.num_views,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["augment"] = keras.saving.deserialize_keras_object(config["augment"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_ssl")
class ChainedViews(ViewMaker):
    """The views of several view makers, one after the other (SLIP: CLIP's view, then SimCLR's two).

    Args:
        makers: list of view makers of full-size views.

    Example:
        >>> views = keras_ssl.views.ChainedViews([keras_ssl.views.clip_view(16, seed=0), keras_ssl.views.simclr_views(16, seed=1)])
        >>> views.num_global, [tuple(v.shape) for v in views(images, training=True)] == [(8, 16, 16, 3)] * 3
        (3, True)
    """

    def __init__(self, makers, **kwargs):
        super().__init__(**kwargs)
        makers = [keras.saving.deserialize_keras_object(m) if isinstance(m, dict) else m for m in makers]
        if not makers or not all(isinstance(m, ViewMaker) and not m.num_local for m in makers):
            raise TypeError("ChainedViews takes a list of view makers of full-size views.")
        self.makers = makers

    @property
    def num_global(self):
        return sum(m.num_global for m in self.makers)

    def build(self, input_shape):
        for maker in self.makers:
            if not maker.built:
                maker.build(input_shape)

    def call(self, images, training=True):
        return [view for maker in self.makers for view in maker(images, training=training)]

    def view_shapes(self, image_shape):
        return [shape for maker in self.makers for shape in maker.view_shapes(image_shape)]

    def get_config(self):
        return {**super().get_config(), "makers": [keras.saving.serialize_keras_object(m) for m in self.makers]}


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
        >>> views = keras_ssl.views.MultiCrop(16, 8, num_local=4, seed=0)(images, training=True)
        >>> [v.shape[1] for v in views]   # 2 global crops, then the local ones
        [16, 16, 8, 8, 8, 8]
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
            raise ValueError(f"Need num_global >= 1 and num_local >= 0, got {num_global}, {num_local}.")
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
            (self.local_size, self.local_size, channels)
        ] * self.num_local

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
