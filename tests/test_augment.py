"""Augmentation layers: per-sample crops, RandomApply, presets, compiled."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, random_images

from keras_ssl import views as augment


def unit(x):
    return x.astype("float32") / 255.0


class Views(keras.Model):
    """Runs an augmenter in training mode inside `predict` (compiled)."""

    def __init__(self, augmenter, **kwargs):
        super().__init__(**kwargs)
        self.augmenter = augmenter

    def call(self, x):
        out = self.augmenter(x, training=True)
        return keras.ops.concatenate(out, axis=1) if isinstance(out, list) else out


def compiled_views(augmenter, x, calls=2):
    model = Views(augmenter)
    model.compile(jit_compile=BACKEND == "jax")
    return [model.predict(x, batch_size=len(x), verbose=0) for _ in range(calls)]


def test_full_crop_is_identity_and_flip_is_exact():
    x = unit(random_images(8, 12))
    crop = augment.RandomResizedCrop(12, scale=(1, 1), ratio=(1, 1), seed=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(crop(x)), x, atol=1e-5)
    flip = augment.RandomResizedCrop(12, scale=(1, 1), ratio=(1, 1), horizontal_flip=True, seed=0)
    out = keras.ops.convert_to_numpy(flip(x))
    flipped = [np.allclose(o, xi[:, ::-1], atol=1e-5) for o, xi in zip(out, x)]
    same = [np.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert any(flipped) and any(same)


def test_downscale_matches_bilinear_half_pixel_reference():
    # Resizing a 4x4 image to 2x2 with half-pixel centres samples at 0.5 and 2.5:
    # each output pixel is the mean of a 2x2 block.
    x = np.arange(32, dtype="float32").reshape(2, 4, 4, 1) / 32
    crop = augment.RandomResizedCrop(2, scale=(1, 1), ratio=(1, 1), seed=0)
    want = x.reshape(2, 2, 2, 2, 2, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(crop(x)), want, atol=1e-6)


def test_crops_differ_between_samples_and_calls_compiled():
    x = np.repeat(unit(random_images(1, 16)), 8, axis=0)  # eight identical images
    crop = augment.RandomResizedCrop(16, scale=(0.2, 1.0), horizontal_flip=True, seed=3)
    a, b = compiled_views(crop, x)
    assert a.shape == (8, 16, 16, 3)
    assert len({np.round(v, 4).tobytes() for v in a}) == 8, "each sample needs its own crop"
    assert not np.allclose(a, b), "two calls gave the same views"
    assert a.min() >= -1e-6 and a.max() <= 1 + 1e-6


def test_crop_area_follows_scale():
    # A crop of a small area out of a gradient image has a small value range.
    ramp = np.broadcast_to(np.linspace(0, 1, 32, dtype="float32")[None, None, :, None], (64, 32, 32, 1))
    small = augment.RandomResizedCrop(8, scale=(0.04, 0.04), ratio=(1, 1), seed=1)(ramp)
    spans = np.ptp(keras.ops.convert_to_numpy(small), axis=(1, 2, 3))
    # side 0.2 * 32 = 6.4 px; 8 samples 0.8 px apart span 5.6 px of a ramp rising 1/31 per px
    np.testing.assert_allclose(spans, 5.6 / 31, atol=0.04)


def test_random_apply_rates():
    x = unit(random_images(64, 8))
    zero = keras.layers.Rescaling(0.0)
    never = augment.RandomApply(zero, rate=0.0, seed=1)(x)
    always = augment.RandomApply(zero, rate=1.0, seed=1)(x)
    half = keras.ops.convert_to_numpy(augment.RandomApply(zero, rate=0.5, seed=1)(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(never), x)
    assert np.all(keras.ops.convert_to_numpy(always) == 0)
    zeroed = np.all(half == 0, axis=(1, 2, 3))
    kept = np.all(np.isclose(half, x), axis=(1, 2, 3))
    assert np.all(zeroed | kept) and 16 <= zeroed.sum() <= 48
    with pytest.raises(ValueError, match="rate"):
        augment.RandomApply(zero, rate=1.5)


@pytest.mark.parametrize("channels", [3, 1])
def test_simclr_views_differ_compiled_and_input_untouched(channels):
    x = unit(random_images(8, 16, channels))
    x = np.repeat(x[:1], 8, axis=0)
    original = x.copy()
    aug = augment.simclr_augmenter(16, channels=channels, seed=5)
    a, b = compiled_views(aug, x)
    assert a.shape == (8, 16, 16, channels)
    assert np.isfinite(a).all() and a.min() >= -1e-5 and a.max() <= 1 + 1e-5
    assert not np.allclose(a, b)
    assert len({np.round(v, 4).tobytes() for v in a}) == 8
    np.testing.assert_array_equal(x, original)


def test_simclr_colour_ops_are_per_sample():
    # Without the crop's randomness (scale 1, ratio 1), differences between
    # identical images come from flip and the colour layers alone.
    x = np.repeat(unit(random_images(1, 8)), 64, axis=0)
    aug = augment.simclr_augmenter(8, crop_scale=(1, 1), seed=2)
    out = keras.ops.convert_to_numpy(aug(x, training=True))
    gray = np.all(np.abs(out[..., :1] - out) < 1e-4, axis=(1, 2, 3))
    assert 2 <= gray.sum() <= 30, f"grayscale p=0.2 gave {gray.sum()}/64"
    means = out.mean(axis=(1, 2))
    assert len(np.unique(np.round(means, 3), axis=0)) > 32


def test_multicrop_shapes_and_distinct_views():
    x = unit(random_images(4, 16))
    views = augment.MultiCrop(16, 8, num_global=2, num_local=3, seed=0)(x, training=True)
    assert [tuple(v.shape) for v in views] == [(4, 16, 16, 3)] * 2 + [(4, 8, 8, 3)] * 3
    v0, v1 = (keras.ops.convert_to_numpy(v) for v in views[:2])
    assert not np.allclose(v0, v1)
    with pytest.raises(ValueError, match="num_global"):
        augment.MultiCrop(16, 8, num_global=0)


def test_many_views_are_distinct_draws_and_round_trip():
    x = unit(random_images(4, 16))
    maker = augment.ManyViews(augment.simclr_augmenter(16, seed=3), num_views=3)
    views = [keras.ops.convert_to_numpy(v) for v in maker(x, training=True)]
    assert [v.shape for v in views] == [(4, 16, 16, 3)] * 3 and maker.num_global == 3
    assert not np.allclose(views[0], views[1]) and not np.allclose(views[1], views[2])
    assert maker.view_shapes((16, 16, 3)) == [(16, 16, 3)] * 3
    assert augment.ManyViews.from_config(maker.get_config()).num_views == 3
    with pytest.raises(ValueError, match="num_views"):
        augment.ManyViews(augment.simclr_augmenter(16), num_views=1)


def test_configs_round_trip():
    aug = augment.simclr_augmenter(16, seed=4, blur_rate=0.5, solarize_rate=0.2)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(aug))
    assert [type(a).__name__ for a in clone.layers] == [type(a).__name__ for a in aug.layers]
    crop = augment.RandomResizedCrop((8, 12), scale=(0.3, 0.9), horizontal_flip=True, seed=9)
    again = augment.RandomResizedCrop.from_config(crop.get_config())
    assert again.size == (8, 12) and again.scale == (0.3, 0.9) and again.horizontal_flip
    mc = augment.MultiCrop(16, 8, num_local=2, seed=1)
    assert augment.MultiCrop.from_config(mc.get_config()).num_local == 2
    import json

    jitter = augment.ColorJitter(0.4, (0.5, 1.2), 0.3, 0.1, seed=2)
    again = augment.ColorJitter.from_config(json.loads(json.dumps(jitter.get_config())))
    np.testing.assert_allclose(
        [again.brightness, again.contrast, again.saturation, again.hue],
        [(0.6, 1.4), (0.5, 1.2), (0.7, 1.3), (-0.1, 0.1)],
    )
    assert again.seed == 2


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        augment.RandomResizedCrop(8, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="scale"):
        augment.RandomResizedCrop(8, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="size"):
        augment.RandomResizedCrop(0)
    with pytest.raises(ValueError, match="channels"):
        augment.simclr_augmenter(16, channels=2)


def _jitter_reference(x, b, c, s, h, order=(0, 1, 2, 3)):
    """torchvision's colour-jitter formulas in NumPy, hue through `colorsys`; `order` as torchvision's
    `fn_idx` (0 brightness, 1 contrast, 2 saturation, 3 hue)."""
    import colorsys

    gray = lambda im: (0.299 * im[..., 0] + 0.587 * im[..., 1] + 0.114 * im[..., 2])[..., None]

    def hue(x):
        out = np.empty_like(x)
        for idx in np.ndindex(x.shape[:-1]):
            hh, ss, vv = colorsys.rgb_to_hsv(*x[idx])
            out[idx] = colorsys.hsv_to_rgb((hh + h) % 1.0, ss, vv)
        return out

    transforms = [
        lambda x: np.clip(x * b, 0, 1),
        lambda x: np.clip(c * x + (1 - c) * gray(x).mean(), 0, 1),
        lambda x: np.clip(s * x + (1 - s) * gray(x), 0, 1),
        hue,
    ]
    for i in order:
        x = transforms[i](x)
    return x


@pytest.mark.parametrize("factors", [(1.3, 0.7, 1.5, 0.1), (0.6, 1.4, 0.2, -0.3), (1.0, 1.0, 1.0, 0.5)])
def test_colour_jitter_matches_torchvision_formulas(factors):
    x = unit(random_images(3, 6))
    x[0, 0, 0] = [0.5, 0.5, 0.5]  # grey: hue undefined, must stay grey
    b, c, s, h = factors
    jitter = augment.ColorJitter((b, b), (c, c), (s, s), (h, h), seed=0, random_order=False)
    out = keras.ops.convert_to_numpy(jitter(x, training=True))
    expected = np.stack([_jitter_reference(xi, b, c, s, h) for xi in x])
    np.testing.assert_allclose(out, expected, atol=2e-5)


def test_colour_jitter_runs_its_four_transforms_in_a_uniform_random_order_per_image():
    import itertools

    # torchvision's ColorJitter.forward: fn_idx = torch.randperm(4) for every image it is called on.
    factors = (1.6, 0.4, 1.8, 0.3)  # strong enough to clip, so that all 24 orders give different images
    image = unit(random_images(1, 4))[0]
    orders = list(itertools.permutations(range(4)))
    references = np.stack([_jitter_reference(image, *factors, order=o) for o in orders])
    gaps = np.abs(references[:, None] - references[None]).max(axis=(2, 3, 4)) + np.eye(24)
    assert gaps.min() > 1e-2  # the test can tell every order apart
    jitter = augment.ColorJitter(*[(f, f) for f in factors], seed=1)
    assert jitter.random_order and augment.ColorJitter.from_config(jitter.get_config()).random_order
    out = keras.ops.convert_to_numpy(jitter(np.repeat(image[None], 960, axis=0), training=True))
    distance = np.abs(out[:, None] - references[None]).max(axis=(2, 3, 4))  # (images, orders)
    assert distance.min(axis=1).max() < 2e-5  # each image is one of the 24 orders, computed exactly
    counts = np.bincount(distance.argmin(axis=1), minlength=24)
    # 40 expected per order; a binomial(960, 1/24) falls outside [15, 70] with probability below 1e-6.
    assert counts.min() >= 15 and counts.max() <= 70, counts


def test_colour_jitter_draws_per_image_and_keeps_the_range():
    x = np.repeat(unit(random_images(1, 8)), 16, axis=0)
    jitter = augment.color_jitter(1.0, seed=4)
    out = keras.ops.convert_to_numpy(jitter(x, training=True))
    assert out.min() >= 0 and out.max() <= 1
    distinct = {np.round(o, 4).tobytes() for o in out}
    assert len(distinct) == 16, "identical images got identical factors"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(jitter(x, training=False)), x)
    np.testing.assert_allclose([jitter.brightness, jitter.hue], [(0.2, 1.8), (-0.2, 0.2)])
    for bad in (dict(brightness=-0.1), dict(hue=0.6), dict(contrast=(-0.5, 1.0))):
        with pytest.raises(ValueError, match=next(iter(bad))):
            augment.ColorJitter(**bad)
    with pytest.raises(ValueError, match="3 channels"):
        jitter(x[..., :1], training=True)


def test_solarisation_is_the_papers_fixed_threshold():
    # BYOL's official augmentations.py: tf.where(image < 0.5, image, 1. - image); torchvision's
    # RandomSolarize(threshold=128) likewise. Keras's Solarization(threshold_factor=(0.5, 0.5))
    # draws its threshold in [0.5, 127.5] / 255, so it inverts darker pixels too: not the papers'.
    x = np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 3)).astype("float32")
    want = np.where(x < 0.5, x, 1.0 - x)
    got = keras.ops.convert_to_numpy(augment.Solarize()(x, training=True))
    np.testing.assert_allclose(got, want, atol=1e-7)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(augment.Solarize()(x, training=False)), x)
    always = augment.simclr_augmenter(8, solarize_rate=1.0, jitter_rate=0.0, grayscale_rate=0.0, seed=1)
    solarised = [a for a in always.layers if isinstance(a, augment.RandomApply) and a.rate == 1.0]
    out = keras.ops.convert_to_numpy(solarised[0](x, training=True))
    np.testing.assert_allclose(out, want, atol=1e-7)
    assert out.max() <= 0.5  # every value at or above the threshold was inverted
    with pytest.raises(ValueError, match="threshold"):
        augment.Solarize(0.0)
