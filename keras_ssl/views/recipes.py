"""Every paper's view recipe, in one place."""

from keras_ssl.views.augment import RandomResizedCrop, simclr_augmenter
from keras_ssl.views.makers import ChainedViews, ManyViews, OneView, TwoViews
from keras_ssl.views.seeds import SeedStream


def _with_min_scale(scale, min_crop_scale):
    """`scale` with no crop smaller than `min_crop_scale` (None: unchanged)."""
    if min_crop_scale is None:
        return tuple(scale)
    low = max(float(min_crop_scale), scale[0])
    return (low, max(low, scale[1]))


def simclr_views(
    image_size,
    *,
    channels=3,
    crop_scale=(0.08, 1.0),
    min_crop_scale=None,
    horizontal_flip=True,
    color_strength=None,
    blur_rate=0.5,
    seed=None,
):
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
        >>> v1, v2 = keras_ssl.views.simclr_views(16, seed=0)(images, training=True)
        >>> tuple(v1.shape), tuple(v2.shape)
        ((8, 16, 16, 3), (8, 16, 16, 3))
    """
    big = image_size > 32
    if color_strength is None:
        color_strength = 1.0 if big else 0.5
    return TwoViews(
        simclr_augmenter(
            image_size,
            channels=channels,
            crop_scale=_with_min_scale(crop_scale, min_crop_scale),
            color_strength=color_strength,
            blur_rate=blur_rate if big else 0.0,
            horizontal_flip=horizontal_flip,
            seed=seed,
        )
    )


def crop_view(image_size, *, channels=3, crop_scale=(0.2, 1.0), min_crop_scale=None, horizontal_flip=True, seed=None):
    """One view: a random resized crop and flip, no colour (MAE; CLIP uses (0.5, 1)).

    Args:
        image_size: output side of the view.
        channels: image channels (unused: no colour augmentation).
        crop_scale: area range of the crop.
        min_crop_scale: no crop smaller than this fraction.
        horizontal_flip: flip half of the views.
        seed: seed of the crop.

    Example:
        >>> [v] = keras_ssl.views.crop_view(8, seed=0)(images, training=True)
        >>> tuple(v.shape)
        (8, 8, 8, 3)
    """
    return OneView(
        RandomResizedCrop(
            image_size, scale=_with_min_scale(crop_scale, min_crop_scale), horizontal_flip=horizontal_flip, seed=seed
        )
    )


BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)


def byol_views(image_size, *, channels=3, crop_scale=(0.08, 1.0), min_crop_scale=None, horizontal_flip=True, seed=None):
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
        >>> views = keras_ssl.views.byol_views(16, seed=0)
        >>> v1, v2 = views(images, training=True)
        >>> tuple(v1.shape), tuple(v2.shape)
        ((8, 16, 16, 3), (8, 16, 16, 3))
    """
    big = image_size > 32
    seeds = SeedStream(seed)
    common = dict(
        channels=channels,
        crop_scale=_with_min_scale(crop_scale, min_crop_scale),
        horizontal_flip=horizontal_flip,
        color_strength=BYOL_JITTER,
    )
    return TwoViews(
        simclr_augmenter(image_size, blur_rate=1.0 if big else 0.0, seed=seeds(), name="view_1", **common),
        simclr_augmenter(
            image_size, blur_rate=0.1 if big else 0.0, solarize_rate=0.2, seed=seeds(), name="view_2", **common
        ),
    )


def mocov2_views(image_size, **options):
    """MoCo v2's and SimSiam's views: SimCLR's pipeline, crop scale (0.2, 1), colour strength 0.5.

    Args:
        image_size: output side of each view.
        **options: `simclr_views` arguments (they override the recipe's).

    Example:
        >>> v1, v2 = keras_ssl.views.mocov2_views(16, seed=0)(images, training=True)
        >>> tuple(v1.shape), tuple(v2.shape)
        ((8, 16, 16, 3), (8, 16, 16, 3))
    """
    return simclr_views(image_size, **{"crop_scale": (0.2, 1.0), "color_strength": 0.5, **options})


def fastsiam_views(image_size, *, channels=3, min_crop_scale=None, horizontal_flip=True, seed=None, num_views=4):
    """FastSiam's views: `num_views` draws from SimSiam's pipeline (`mocov2_views`).

    Args:
        image_size: output side of each view.
        channels: image channels.
        min_crop_scale: no crop smaller than this fraction (digits: 0.3).
        horizontal_flip: flip half of the views.
        seed: base seed.
        num_views: views per image, `K` (paper: 4, one predicted from the other three).

    Example:
        >>> views = keras_ssl.views.fastsiam_views(16, seed=0)(images, training=True)
        >>> len(views), tuple(views[0].shape)
        (4, (8, 16, 16, 3))
    """
    pipeline = mocov2_views(
        image_size, channels=channels, min_crop_scale=min_crop_scale, horizontal_flip=horizontal_flip, seed=seed
    ).augment
    return ManyViews(pipeline, num_views=num_views)


def mmcr_views(
    image_size,
    *,
    channels=3,
    min_crop_scale=None,
    horizontal_flip=True,
    seed=None,
    num_views=8,
    crop_scale=(0.08, 1.0),
    grayscale_rate=0.2,
):
    """MMCR's views: `num_views` draws from SimCLR's pipeline (`ManyViews`).

    The official CIFAR recipe: resized crop (0.08, 1), flip, colour jitter
    (0.4, 0.4, 0.4, 0.1) with probability 0.8, grayscale 0.2, no blur;
    above 32 px colour strength 1.0 and blur 0.5, as `simclr_views`.

    Args:
        image_size: output side of each view.
        channels: image channels.
        min_crop_scale: no crop smaller than this fraction.
        horizontal_flip: flip half of the views.
        seed: base seed.
        num_views: views of each image (>= 2).
        crop_scale: area range of the resized crop.
        grayscale_rate: probability of grayscale.

    Example:
        >>> views = keras_ssl.views.mmcr_views(16, num_views=3, seed=0)(images, training=True)
        >>> [tuple(v.shape) for v in views]
        [(8, 16, 16, 3), (8, 16, 16, 3), (8, 16, 16, 3)]
    """
    big = image_size > 32
    augment = simclr_augmenter(
        image_size,
        channels=channels,
        crop_scale=_with_min_scale(crop_scale, min_crop_scale),
        color_strength=1.0 if big else 0.5,
        blur_rate=0.5 if big else 0.0,
        grayscale_rate=grayscale_rate,
        horizontal_flip=horizontal_flip,
        seed=seed,
    )
    return ManyViews(augment, num_views=num_views)


def wmse_views(image_size, *, num_views=2, **options):
    """W-MSE's views: `mmcr_views` with the official crop scale (0.2, 1) and grayscale 0.1.

    Colour jitter (0.4, 0.4, 0.4, 0.1) with probability 0.8 at CIFAR size,
    as htdt/self-supervised; two views unless `num_views` says otherwise.

    Args:
        image_size: output side of each view.
        num_views: views of each image (paper: 2 or 4).
        **options: `mmcr_views` arguments (they override the recipe's).

    Example:
        >>> views = keras_ssl.views.wmse_views
        >>> len(views(16, seed=0)(images, training=True)), views(16, num_views=4).num_views
        (2, 4)
    """
    return mmcr_views(image_size, num_views=num_views, **{"crop_scale": (0.2, 1.0), "grayscale_rate": 0.1, **options})


def ressl_views(image_size, *, channels=3, min_crop_scale=None, horizontal_flip=True, seed=None):
    """ReSSL's two views: a weak one for the teacher, then MoCo v2's strong one for the student.

    The weak view is a random resized crop of scale (0.2, 1) and a flip,
    nothing else (the official `target_aug`); the strong view is MoCo v2's
    (`moco_aug`): the same crop and flip, colour jitter (0.4, 0.4, 0.4, 0.1)
    with probability 0.8, grayscale 0.2 and, above 32 px, blur 0.5.

    Args:
        image_size: output side of each view.
        channels: image channels.
        min_crop_scale: no crop smaller than this fraction (digits: 0.3).
        horizontal_flip: flip half of the views.
        seed: base seed.

    Returns:
        A `TwoViews`: the weak view first, the strong one second.

    Example:
        >>> weak, strong = keras_ssl.views.ressl_views(16, seed=0)(images, training=True)
        >>> tuple(weak.shape), tuple(strong.shape)
        ((8, 16, 16, 3), (8, 16, 16, 3))
    """
    seeds = SeedStream(seed)
    scale = _with_min_scale((0.2, 1.0), min_crop_scale)
    weak = RandomResizedCrop(image_size, scale=scale, horizontal_flip=horizontal_flip, seed=seeds(), name="weak")
    strong = simclr_augmenter(
        image_size,
        channels=channels,
        crop_scale=scale,
        color_strength=0.5,
        blur_rate=0.5 if image_size > 32 else 0.0,
        horizontal_flip=horizontal_flip,
        seed=seeds(),
        name="strong",
    )
    return TwoViews(weak, strong)


def simmim_views(image_size, *, crop_scale=(0.67, 1.0), **kwargs):
    """SimMIM's one view: a random resized crop (scale 0.67-1, ratio 3/4-4/3) and a flip (`crop_view`).

    Example:
        >>> [v] = keras_ssl.views.simmim_views(16, seed=0)(images, training=True)
        >>> tuple(v.shape)
        (8, 16, 16, 3)
    """
    return crop_view(image_size, crop_scale=crop_scale, **kwargs)


def ijepa_view(image_size, *, channels=3, crop_scale=(0.3, 1.0), min_crop_scale=None, horizontal_flip=False, seed=None):
    """I-JEPA's one view: a random resized crop (scale 0.3-1), no flip, no colour.

    `horizontal_flip` is accepted (recipe signature) and ignored: the official recipe never flips.

    Example:
        >>> [v] = keras_ssl.views.ijepa_view(8, seed=0)(images, training=True)
        >>> tuple(v.shape)
        (8, 8, 8, 3)
    """
    del horizontal_flip
    return crop_view(image_size, crop_scale=crop_scale, min_crop_scale=min_crop_scale, horizontal_flip=False, seed=seed)


def supcon_views(image_size, **options):
    """SupContrast's views (its `main_supcon.py`): SimCLR's pipeline, crop scale (0.2, 1), colour strength 0.5, no blur.

    Args:
        image_size: output side of each view.
        **options: `simclr_views` arguments (they override the recipe's).

    Example:
        >>> v1, v2 = keras_ssl.views.supcon_views(16, seed=0)(images, training=True)
        >>> tuple(v1.shape)
        (8, 16, 16, 3)
    """
    return simclr_views(image_size, **{"crop_scale": (0.2, 1.0), "color_strength": 0.5, "blur_rate": 0.0, **options})


def clip_view(image_size, **options):
    """CLIP's image view: a resized crop of scale (0.5, 1) and a flip, no colour.

    Args:
        image_size: output side of the view.
        **options: `crop_view` arguments (they override the recipe's).

    Example:
        >>> [v] = keras_ssl.views.clip_view(8, seed=0)(images, training=True)
        >>> tuple(v.shape)
        (8, 8, 8, 3)
    """
    return crop_view(image_size, **{"crop_scale": (0.5, 1.0), **options})


def slip_views(image_size, *, channels=3, min_crop_scale=None, horizontal_flip=True, seed=None):
    """SLIP's views: CLIP's crop (`clip_view`), then two SimCLR views with jitter (0.4, 0.4, 0.4, 0.1).

    Args:
        image_size: side of the views.
        channels: image channels.
        min_crop_scale: no crop smaller than this fraction.
        horizontal_flip: flip half of the views.
        seed: base seed.

    Example:
        >>> len(keras_ssl.views.slip_views(16, seed=0)(images, training=True))
        3
    """
    seeds = SeedStream(seed)
    options = dict(channels=channels, min_crop_scale=min_crop_scale, horizontal_flip=horizontal_flip)
    # SLIP's SimCLR jitter is (0.4, 0.4, 0.4, 0.1): colour strength 0.5 at every size
    return ChainedViews(
        [
            clip_view(image_size, seed=seeds(), **options),
            simclr_views(image_size, color_strength=0.5, seed=seeds(), **options),
        ]
    )
