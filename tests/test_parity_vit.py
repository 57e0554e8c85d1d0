"""The parity benchmark's PyTorch ViT and MAE references (benchmarks/torch_vit.py).

Given keras_ssl's weights, the reference ViT computes keras_ssl's features and tokens,
and its MAE keras_ssl's loss on the same mask; the reference's own loss equals a NumPy
computation of the paper's. Run once, in the torch backend's run of the suite.
"""

import os
import sys

import keras
import numpy as np
import pytest

if keras.backend.backend() != "torch":
    pytest.skip("the PyTorch reference is checked once, in the torch backend's run", allow_module_level=True)
torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import torch_vit

import keras_ssl

SIZES = dict(image_size=16, patch_size=4, dim=32, depth=2, heads=2, initializer="mae")
MAE_SIZES = dict(mask_ratio=0.75, decoder_dim=16, decoder_depth=1, decoder_heads=2)


@pytest.fixture(autouse=True)
def one_thread():
    # Small models: one thread is as fast, and leaves the other cores alone.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _perturbed(model, seed):
    """Every trainable weight moved off its init, so unit LayerNorms and zero biases hide no mix-up."""
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        w.assign(keras.ops.convert_to_numpy(w) + rng.normal(0.0, 0.1, tuple(w.shape)).astype("float32"))
    return model


def _nchw(images):
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


OPTIONS = [dict(positions="sincos", pixel_norm="imagenet"), dict(positions="learned")]


@pytest.mark.parametrize("options", OPTIONS, ids=["sincos-imagenet", "learned"])
def test_vit_computes_keras_ssl_vit(options):
    vit = _perturbed(keras_ssl.backbones.vit(**SIZES, **options), seed=1)
    images = np.random.default_rng(2).uniform(size=(4, 16, 16, 3)).astype("float32")
    reference = torch_vit.ViT.like(vit)
    torch_vit.from_keras(reference, vit)
    with torch.no_grad():
        x = _nchw(images)
        patches, features = reference.embed_patches(x), reference(x)
        tokens = reference.encode_tokens(patches)
    expected_patches = vit.embed_patches(images)
    np.testing.assert_allclose(patches.numpy(), _numpy(expected_patches), atol=1e-5, rtol=0)
    np.testing.assert_allclose(tokens.numpy(), _numpy(vit.encode_tokens(expected_patches)), atol=1e-5, rtol=0)
    np.testing.assert_allclose(features.numpy(), _numpy(vit(images)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("options", OPTIONS, ids=["sincos-imagenet", "learned"])
def test_keras_arrays_hand_the_reference_init_to_keras_ssl(options):
    reference = torch_vit.ViT.like(keras_ssl.backbones.vit(**SIZES, **options))  # its own (models_mae) init
    arrays = torch_vit.keras_arrays(reference)
    fresh = keras_ssl.backbones.vit(**SIZES, **options)
    assert set(arrays) == set(torch_vit.keras_variables(fresh))
    images = np.random.default_rng(3).uniform(size=(4, 16, 16, 3)).astype("float32")
    with torch.no_grad():
        expected = reference(_nchw(images)).numpy()
    assert np.max(np.abs(_numpy(fresh(images)) - expected)) > 1e-3  # another draw: the assignment matters
    torch_vit.assign_keras(fresh, arrays)
    np.testing.assert_allclose(_numpy(fresh(images)), expected, atol=1e-5, rtol=0)
    back = torch_vit.ViT.like(fresh)
    torch_vit.from_keras(back, fresh)
    for key, array in torch_vit.keras_arrays(back).items():
        np.testing.assert_array_equal(array, arrays[key], err_msg=key)


@pytest.mark.parametrize("mlp_ratio", [4.0, 2.0])  # models_mae.py's decoder blocks take the encoder's ratio
def test_mae_loss_is_keras_ssl_mae_loss(mlp_ratio):
    vit = keras_ssl.backbones.vit(**SIZES, positions="sincos", pixel_norm="imagenet", mlp_ratio=mlp_ratio)
    model = keras_ssl.MAE(vit, seed=0, **MAE_SIZES)
    _perturbed(model, seed=4)
    images = np.random.default_rng(5).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    # The views made the identity, so both sides see the same pixels; the mask is keras_ssl's own draw.
    object.__setattr__(model, "views", lambda x, training=True: [x])
    outputs = model.ssl_forward(model.views(model.preprocess(images)), training=False)
    loss, _ = model.compute_ssl_loss(outputs)
    mask = _numpy(outputs["mask"])
    assert mask.sum(axis=1).tolist() == [12.0] * 4
    reference = torch_vit.MAE.like(model)  # models_mae.py's target (the standardised images) and visible count
    torch_vit.from_keras(reference, model)
    # Noise whose argsort keeps exactly keras_ssl's visible patches (in raster order: the
    # encoder is permutation-equivariant and the decoder unshuffles).
    noise = torch.from_numpy(mask + 0.5 * np.arange(16, dtype="float32") / 16)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0  # parity.py's torch_images
    with torch.no_grad():
        ref_loss, pred, ref_mask = reference(x, noise=noise)
    np.testing.assert_array_equal(ref_mask.numpy(), mask)
    np.testing.assert_allclose(pred.numpy(), _numpy(outputs["pred"]), atol=1e-5, rtol=0)
    assert float(ref_loss) == pytest.approx(float(_numpy(loss)), rel=1e-5)


def test_reference_init_draws_as_keras_ssl_mae():
    """models_mae's init and keras_ssl's ("mae" preset, MAEDecoder) draw each weight from the same law.

    The fixed sine-cosine tables are equal (from_keras overwrites them: only here is the reference's own checked).
    """
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    model = keras_ssl.MAE(keras_ssl.backbones.vit(**SIZES, positions="sincos"), seed=0, **MAE_SIZES)
    arrays = torch_vit.keras_arrays(torch_vit.MAE.like(model))
    for key, variable in torch_vit.keras_variables(model).items():
        ours, theirs = arrays[key], _numpy(variable)
        if not variable.trainable:
            np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0, err_msg=key)
        elif np.all(theirs == theirs.flat[0]):  # zeros and ones
            np.testing.assert_array_equal(ours, theirs, err_msg=key)
        else:  # the std of a few draws: 10 % for >= 1000 entries, 20 % for >= 256, else 50 %
            tolerance = 0.1 if ours.size >= 1000 else 0.2 if ours.size >= 256 else 0.5
            assert np.std(ours) == pytest.approx(np.std(theirs), rel=tolerance), key
            assert abs(np.mean(ours)) < 3 * np.std(theirs) / np.sqrt(ours.size) + 1e-3, key


def _numpy_mae_loss(images, pred, mask, patch_size, norm_pix):
    """The paper's loss from its definition: per-patch (normalised) pixels, MSE per patch, mean over masked ones."""
    b, c, height, width = images.shape
    p = patch_size
    losses, weights = [], []
    for i in range(b):
        for r in range(height // p):
            for col in range(width // p):
                n = r * (width // p) + col  # raster order
                # A patch's pixels row by row, channels last.
                target = images[i, :, r * p : (r + 1) * p, col * p : (col + 1) * p].transpose(1, 2, 0).reshape(-1)
                if norm_pix:
                    target = (target - target.mean()) / np.sqrt(target.var(ddof=1) + 1e-6)
                losses.append(np.mean((pred[i, n] - target) ** 2))
                weights.append(mask[i, n])
    return np.sum(np.array(losses) * weights) / np.sum(weights)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_reference_loss_is_the_papers(norm_pix):
    torch.manual_seed(0)
    encoder = torch_vit.ViT(16, 4, 3, 32, 2, 2, positions="sincos", pixel_norm="imagenet")
    reference = torch_vit.MAE(encoder, norm_pix_loss=norm_pix, **MAE_SIZES).double()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    noise = torch.rand(3, 16, dtype=torch.float64)
    with torch.no_grad():
        loss, pred, mask = reference(x, noise=noise)
    # 25 % visible (int(16 * 0.25) = 4): the patches of least noise.
    expected_mask = np.ones((3, 16))
    np.put_along_axis(expected_mask, np.argsort(noise.numpy(), axis=1)[:, :4], 0.0, axis=1)
    np.testing.assert_array_equal(mask.numpy(), expected_mask)
    # models_mae's target: the standardised images the encoder sees (main_pretrain.py's Normalize).
    # The statistics as float32, as both implementations keep them.
    mean, std = (np.array(v, "float32").astype("float64") for v in (torch_vit.IMAGENET_MEAN, torch_vit.IMAGENET_STD))
    standardised = (x.numpy() - mean[:, None, None]) / std[:, None, None]
    expected = _numpy_mae_loss(standardised, pred.numpy(), expected_mask, 4, norm_pix)
    assert float(loss) == pytest.approx(expected, rel=1e-9)
