"""SimMIM: the masked-pixel L1 loss and the mask sampler against NumPy ports of the official code, the forward."""

import numpy as np
import pytest
from conftest import grads, random_images, small_encoder
from keras import ops
from numpy_refs_simmim import (
    MaskGeneratorRef,
    simmim_decoder_ref,
    simmim_loss_grads_ref,
    simmim_loss_ref,
)

from keras_ssl.backbones.vit import vit
from keras_ssl.layers.random_masks import RandomSquareMasking, mask_grid, random_square_masks
from keras_ssl.losses.reconstruction import simmim_reconstruction
from keras_ssl.methods.simmim import IMAGENET_MEAN, IMAGENET_STD, SimMIM


def np_(x):
    return ops.convert_to_numpy(x)


def make_model(**kw):
    encoder = vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, pool="mean")
    kw.setdefault("mask_patch_size", 8)
    return SimMIM(encoder, seed=1, **kw)


# ------------------------------------------------------------------ loss
def test_reference_loss_hand_computed():
    # One channel, pixel mask on the diagonal: (|0 - 1| + |0 - 4|) / (2 + 1e-5) / 1.
    x, x_rec = np.zeros((1, 2, 2, 1)), np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
    mask = np.array([[[1, 0], [0, 1]]])
    assert simmim_loss_ref(x, x_rec, mask, 1) == pytest.approx(5 / (2 + 1e-5), rel=1e-12)
    # Three channels, a 2x2 patch grid on 4x4 pixels, one patch masked: |diff| 0.5 everywhere -> 12 * 0.5 / 4 / 3.
    mask = np.array([[[0, 0], [1, 0]]])
    assert simmim_loss_ref(np.zeros((1, 4, 4, 3)), np.full((1, 4, 4, 3), 0.5), mask, 2) == pytest.approx(
        6 / (4 + 1e-5) / 3, rel=1e-12
    )


@pytest.mark.parametrize("grid,channels", [(4, 3), (16, 3), (2, 1), (8, 4)])
def test_loss_values_and_gradients_match_the_official_forward(grid, channels):
    rng = np.random.default_rng(grid + channels)
    x = rng.normal(size=(4, 16, 16, channels)).astype("float32")
    x_rec = rng.normal(size=x.shape).astype("float32")
    mask = (rng.random((4, grid, grid)) < 0.6).astype("float32")
    p = 16 // grid
    loss = float(np_(simmim_reconstruction(x, x_rec, mask)))
    np.testing.assert_allclose(loss, simmim_loss_ref(x, x_rec, mask, p), rtol=1e-5)
    gx, grec = grads(lambda a, b: simmim_reconstruction(a, b, mask), x, x_rec)
    ref_x, ref_rec = simmim_loss_grads_ref(x, x_rec, mask, p)
    np.testing.assert_allclose(gx, ref_x, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(grec, ref_rec, rtol=1e-5, atol=1e-9)
    assert np.all(grec[np.repeat(np.repeat(mask, p, 1), p, 2) == 0] == 0)  # visible pixels get no gradient


def test_loss_of_nothing_masked_is_zero_and_bad_shapes_are_refused():
    x = np.ones((2, 8, 8, 3), "float32")
    assert float(np_(simmim_reconstruction(x, 0 * x, np.zeros((2, 2, 2))))) == 0.0
    with pytest.raises(ValueError, match="mask grid"):
        simmim_reconstruction(x, x, np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="rank 3"):
        simmim_reconstruction(x, x, np.ones((2, 4)))


# ------------------------------------------------------------------ masks
def test_mask_grid_is_the_official_count():
    for args in [(224, 16, 32, 0.6), (192, 4, 32, 0.6), (16, 4, 8, 0.6), (32, 4, 8, 0.5), (96, 8, 16, 0.75)]:
        ref = MaskGeneratorRef(args[0], args[2], args[1], args[3])
        assert mask_grid(*args) == (ref.rand_size, ref.scale, ref.mask_count)
    assert mask_grid(224, 16, 32, 0.6) == (7, 2, 30)  # ceil(29.4)
    with pytest.raises(ValueError, match="multiple of the patch_size"):
        mask_grid(16, 4, 6, 0.6)
    with pytest.raises(ValueError, match="does not divide the image_size"):
        mask_grid(16, 4, 12, 0.6)
    with pytest.raises(ValueError, match="masks all 4"):
        mask_grid(16, 4, 8, 0.9)
    with pytest.raises(ValueError, match="mask_ratio"):
        mask_grid(16, 4, 8, 1.0)


def test_masks_have_the_exact_count_block_structure_and_the_official_position_law():
    draws, (image, patch, mask_patch, ratio) = 4000, (32, 4, 8, 0.6)
    ours = np_(random_square_masks(draws, image, patch, mask_patch, ratio, seed=3))
    assert ours.shape == (draws, 64) and set(np.unique(ours)) <= {0.0, 1.0}
    ref_gen = MaskGeneratorRef(image, mask_patch, patch, ratio, seed=3)
    ref = np.stack([ref_gen() for _ in range(draws)]).reshape(draws, 64)
    # Exactly ceil(0.6 * 16) = 10 mask squares of 2x2 model patches per image, as the official generator.
    np.testing.assert_array_equal(ours.sum(axis=1), np.full(draws, 40))
    np.testing.assert_array_equal(ref.sum(axis=1), np.full(draws, 40))
    grid = ours.reshape(draws, 4, 2, 4, 2)
    assert np.all(grid == grid[:, :, :1, :, :1])  # constant on each square
    squares, ref_squares = grid[:, :, 0, :, 0].reshape(draws, 16), ref.reshape(draws, 4, 2, 4, 2)[:, :, 0, :, 0]
    ref_squares = ref_squares.reshape(draws, 16)
    # Every square masked with probability 10/16, every pair 10*9/(16*15), as a uniform 10-subset.
    np.testing.assert_allclose(squares.mean(0), 10 / 16, atol=0.04)
    np.testing.assert_allclose(squares.mean(0), ref_squares.mean(0), atol=0.05)
    pairs, ref_pairs = squares.T @ squares / draws, ref_squares.T @ ref_squares / draws
    off = ~np.eye(16, dtype=bool)
    np.testing.assert_allclose(pairs[off], 90 / 240, atol=0.05)
    np.testing.assert_allclose(pairs[off], ref_pairs[off], atol=0.06)
    # A shuffle of each row: no position or draw repeats the same pattern more than chance.
    assert len({row.tobytes() for row in squares.astype("uint8")}) > 3000  # 8008 patterns possible


def test_mask_layer_draws_new_masks_each_call_and_replays_from_its_seed():
    layer = RandomSquareMasking(16, 4, mask_patch_size=8, mask_ratio=0.6, seed=5)
    x = ops.zeros((8, 16, 16, 3))
    a, b = np_(layer(x)), np_(layer(x))
    assert a.shape == (8, 16) and not np.array_equal(a, b)
    again = RandomSquareMasking.from_config(layer.get_config())
    np.testing.assert_array_equal(np_(again(x)), a)


# ------------------------------------------------------------------ method
def test_forward_decoder_is_the_official_conv_and_pixel_shuffle_and_loss_is_its_l1():
    model = make_model()
    x = ops.convert_to_tensor(random_images(8).astype("float32") / 255.0)
    out = model._masked_forward(x, training=False, seed=7)
    mask = np_(random_square_masks(8, 16, 4, 8, 0.6, seed=7))
    np.testing.assert_array_equal(np_(out["mask"]).reshape(8, 16), mask)
    tokens = model.encoder.embed_patches(x, mask=mask, mask_token=model.mask_token)
    latent = np_(model.encoder.encode_tokens(tokens))[:, 1:]
    # Our Dense outputs are the official conv's channels in (row, col, channel) order.
    kernel, bias = (np.asarray(w, np.float64) for w in model.decoder.get_weights())
    weight = kernel.reshape(16, 4, 4, 3).transpose(3, 1, 2, 0).reshape(48, 16)
    ref_bias = bias.reshape(4, 4, 3).transpose(2, 0, 1).reshape(48)
    np.testing.assert_allclose(np_(out["pred"]), simmim_decoder_ref(latent, weight, ref_bias, 4), atol=1e-5)
    np.testing.assert_allclose(np_(out["features"]), latent.mean(axis=1), atol=1e-5)
    loss = float(np_(model.compute_ssl_loss(out)[0]))
    ref = simmim_loss_ref(np_(x), np_(out["pred"]), np_(out["mask"]), 4)
    np.testing.assert_allclose(loss, ref, rtol=1e-5)


def test_masked_squares_are_replaced_by_the_mask_token():
    model = make_model()
    x = random_images(8).astype("float32") / 255.0
    out = model._masked_forward(ops.convert_to_tensor(x), training=False, seed=2)
    pixels = np.repeat(np.repeat(np_(out["mask"]), 4, 1), 4, 2)[..., None]
    scribbled = x + 0.7 * pixels  # any content under the mask: the same prediction
    out2 = model._masked_forward(ops.convert_to_tensor(scribbled), training=False, seed=2)
    np.testing.assert_allclose(np_(out2["pred"]), np_(out["pred"]), atol=1e-5)
    x3 = x + 0.5 * (1 - pixels) * (np.arange(16)[None, :, None, None] == 3)  # one visible column changes it
    out3 = model._masked_forward(ops.convert_to_tensor(x3), training=False, seed=2)
    assert not np.allclose(np_(out3["pred"]), np_(out["pred"]), atol=1e-4)


def test_imagenet_targets_are_the_official_normalised_pixels():
    model = make_model(imagenet_targets=True)
    x = random_images(8).astype("float32") / 255.0
    out = model._masked_forward(ops.convert_to_tensor(x), training=False, seed=1)
    expected = (x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(np_(out["target"]), expected, atol=1e-5)
    masked, recon = model.reconstruct(random_images(8), seed=1)
    assert recon.shape == (8, 16, 16, 3) and 0 <= recon.min() and recon.max() <= 1


def test_default_targets_are_the_images_as_the_encoder_sees_them():
    # microsoft/SimMIM: the loader's Normalize feeds the encoder and the loss alike.
    x = random_images(8).astype("float32") / 255.0
    for pixel_norm, expected in ((None, x), ("imagenet", (x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD))):
        encoder = vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, pool="mean", pixel_norm=pixel_norm)
        model = SimMIM(encoder, mask_patch_size=8, seed=1)
        out = model._masked_forward(ops.convert_to_tensor(x), training=False, seed=1)
        np.testing.assert_allclose(np_(out["target"]), expected, atol=1e-5)
        masked, recon = model.reconstruct(random_images(8), seed=1)
        assert 0 <= recon.min() and recon.max() <= 1


def test_reconstruct_keeps_visible_pixels_and_greys_masked_squares():
    model = make_model()
    x = random_images(8)
    masked, recon = model.reconstruct(x, seed=4)
    original = x.astype("float32") / 255.0
    pixels = np.repeat(np.repeat(np_(random_square_masks(8, 16, 4, 8, 0.6, seed=4)).reshape(8, 4, 4), 4, 1), 4, 2)
    assert np.all(masked[pixels == 1] == 0.5)
    np.testing.assert_allclose(masked[pixels == 0], original[pixels == 0], atol=1e-6)
    np.testing.assert_allclose(recon[pixels == 0], original[pixels == 0], atol=1e-6)


def test_options_and_encoders_are_checked():
    assert make_model(mask_patch_size=None).mask_patch_size == 8  # twice the patch below 128 px
    with pytest.raises(ValueError, match="multiple of the patch_size"):
        make_model(mask_patch_size=6)
    with pytest.raises(ValueError, match="3-channel"):
        SimMIM(vit(image_size=16, patch_size=4, channels=1, dim=16, depth=1, heads=2), imagenet_targets=True)
    with pytest.raises(TypeError, match="embed_patches"):
        SimMIM(small_encoder())
