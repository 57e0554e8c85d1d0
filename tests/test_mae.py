"""MAE: masked forward, loss on masked patches only, training, saving, options."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, random_images, small_encoder
from keras import ops

from keras_ssl import losses
from keras_ssl.backbones.vit import ViT, vit
from keras_ssl.layers.masking import patchify
from keras_ssl.methods.mae import MAE


def np_(x):
    return ops.convert_to_numpy(x)


def make_model(encoder=None, **kw):
    kw.setdefault("decoder_dim", 16)
    kw.setdefault("decoder_depth", 1)
    kw.setdefault("decoder_heads", 2)
    encoder = encoder or vit(image_size=16, patch_size=4, dim=32, depth=2, heads=2)
    return MAE(encoder, seed=1, **kw)


def weights_of(layer):
    return [np.array(w) for w in layer.trainable_weights]


def changed(before, after):
    return [not np.array_equal(a, b) for a, b in zip(before, after)]


def test_eager_fit_trains_encoder_and_decoder_with_finite_loss():
    model = make_model()
    # Eager JAX compiles every op of a ViT on its own (35 s on CPU); JAX's
    # jitted step is tested below and eager JAX in test_simclr.
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=BACKEND != "jax")
    encoder, decoder = weights_of(model.encoder), weights_of(model.decoder)
    positions = np.array(model.decoder.positions)
    history = model.fit(random_images(8), batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and history.history["loss"][0] > 0
    assert all(changed(decoder, weights_of(model.decoder)))
    np.testing.assert_array_equal(np.array(model.decoder.positions), positions)  # MAE's fixed sin-cos
    # Every encoder weight learns (the class token too: decoder tokens attend to it).
    assert all(changed(encoder, weights_of(model.encoder)))


def test_forward_shapes_mask_count_and_target_is_the_patchified_view():
    model = make_model()
    out = model(random_images(8), training=True)
    assert out["pred"].shape == out["target"].shape == (8, 16, 48)
    np.testing.assert_array_equal(np_(out["mask"]).sum(axis=1), np.full(8, 12))
    # Targets are patches of augmented views in [0, 1], not of the raw images.
    target = np_(out["target"])
    assert 0 <= target.min() and target.max() <= 1
    raw = np_(patchify(random_images(8).astype("float32") / 255.0, 4))
    assert not np.allclose(target, raw)


def test_loss_is_masked_mse_of_its_own_forward_and_ignores_visible_patches():
    for norm_pix in (False, True):
        model = make_model(norm_pix_loss=norm_pix)
        x = random_images(8)
        out = model(x, training=True)
        loss = float(np_(model.compute_loss(x, None, out, None, training=True)))
        target, pred, mask = np_(out["target"]), np_(out["pred"]), np_(out["mask"])
        if norm_pix:
            expected = np_(losses.mae_reconstruction(target, pred, mask, normalize=True))
        else:  # independent NumPy reference
            per_patch = ((pred - target) ** 2).mean(axis=-1)
            expected = (per_patch * mask).sum() / mask.sum()
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
        # Predictions on visible patches do not enter the loss; on masked ones they do.
        noise = np.random.default_rng(0).normal(size=pred.shape).astype("float32")
        visible_changed = dict(out, pred=pred + noise * (1 - mask)[..., None])
        masked_changed = dict(out, pred=pred + noise * mask[..., None])
        same = float(np_(model.compute_ssl_loss(visible_changed)[0]))
        other = float(np_(model.compute_ssl_loss(masked_changed)[0]))
        np.testing.assert_allclose(same, loss, rtol=1e-6)
        assert abs(other - loss) > 1e-3


def test_encoder_sees_only_visible_patches():
    model = make_model()
    # Batch 8 everywhere: JAX caches eager kernels per shape across tests.
    x = np.random.default_rng(0).random((8, 16, 16, 3)).astype("float32")
    out = model._masked_forward(ops.convert_to_tensor(x), training=False, seed=5)
    mask = np_(out["mask"])
    # Scribble over every masked patch: the prediction must not change.
    patches = np_(patchify(x, 4))
    scribbled = patches + mask[..., None] * 0.7
    x2 = scribbled.reshape(8, 4, 4, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(8, 16, 16, 3)
    out2 = model._masked_forward(ops.convert_to_tensor(x2), training=False, seed=5)
    np.testing.assert_array_equal(np_(out2["mask"]), mask)
    np.testing.assert_allclose(np_(out2["pred"]), np_(out["pred"]), atol=1e-5)
    # ...while a change in one visible patch does change it.
    visible = np.argwhere(mask == 0)[0]
    patches[visible[0], visible[1]] += 0.5
    x3 = patches.reshape(8, 4, 4, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(8, 16, 16, 3)
    out3 = model._masked_forward(ops.convert_to_tensor(x3), training=False, seed=5)
    assert not np.allclose(np_(out3["pred"]), np_(out["pred"]), atol=1e-5)


def test_reconstruct_keeps_visible_patches_and_greys_masked_ones():
    model = make_model(norm_pix_loss=False)
    x = random_images(8)
    masked, recon = model.reconstruct(x, seed=2)
    assert masked.shape == recon.shape == (8, 16, 16, 3)
    assert 0 <= recon.min() and recon.max() <= 1
    original = np_(patchify(x.astype("float32") / 255.0, 4))
    m, r = np_(patchify(masked, 4)), np_(patchify(recon, 4))
    grey = np.all(np.isclose(m, 0.5), axis=-1)
    np.testing.assert_array_equal(grey.sum(axis=1), np.full(8, 12))
    np.testing.assert_allclose(m[~grey], original[~grey], atol=1e-6)
    np.testing.assert_allclose(r[~grey], original[~grey], atol=1e-6)


def test_predict_gives_full_image_encoder_features():
    model = make_model()
    x = random_images(8)
    ref = np_(model.encoder(x.astype("float32") / 255.0))
    np.testing.assert_allclose(model.predict(x, verbose=0), ref, atol=1e-5)


def test_compiled_fit_then_save_load_and_continue(tmp_path):
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = random_images(16)
    encoder, decoder = weights_of(model.encoder), weights_of(model.decoder)
    history = model.fit(x, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and history.history["loss"][0] > 0
    assert all(changed(decoder, weights_of(model.decoder)))
    assert all(changed(encoder, weights_of(model.encoder)))
    path = str(tmp_path / "mae.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MAE) and isinstance(loaded.encoder, ViT)
    assert loaded.mask_ratio == 0.75 and loaded.decoder.dim == 16
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    history = loaded.fit(x, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(loaded.optimizer.iterations) == 4
    model.encoder.save(str(tmp_path / "encoder.keras"))
    encoder = keras.saving.load_model(str(tmp_path / "encoder.keras"))
    crops = x[:, :8, :8].astype("float32") / 255.0  # a local-crop size works too
    np.testing.assert_allclose(np_(encoder(crops)), np_(model.encoder(crops)), atol=1e-5)


def test_bad_options_are_rejected():
    encoder = vit(image_size=16, patch_size=4, dim=32, depth=2, heads=2)
    for ratio in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="mask_ratio"):
            make_model(encoder, mask_ratio=ratio)
    with pytest.raises(ValueError, match="keeps 0 of 16"):
        make_model(encoder, mask_ratio=0.99)
    with pytest.raises(ValueError, match="patch_size 4 does not divide image_size 18"):
        make_model(encoder, image_size=18)
    with pytest.raises(TypeError, match="ViT"):
        MAE(small_encoder())
