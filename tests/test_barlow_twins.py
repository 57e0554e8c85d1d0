"""Barlow Twins: training, its loss and logged terms, saving, options."""

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder
from numpy_refs import barlow_twins as numpy_barlow_twins
from numpy_refs import barlow_twins_terms as numpy_barlow_twins_terms

from keras_ssl.methods.barlow_twins import BarlowTwins


def make_model(**kw):
    kw.setdefault("projection_dim", 32)
    return BarlowTwins(small_encoder(), seed=1, **kw)


def weights_of(layer):
    return [np.array(w) for w in layer.get_weights()]


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("mode", ["default", "eager"])
def test_fit_updates_encoder_and_logs_terms_that_make_the_loss(mode):
    lambd, scale = 0.01, 0.5
    model = make_model(lambd=lambd, scale=scale)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=mode == "eager")
    before = weights_of(model.encoder)
    # One step per epoch, so each logged value is that step's value.
    history = model.fit(random_images(8), batch_size=8, epochs=2, verbose=0).history
    for key in ("loss", "on_diagonal", "off_diagonal", "z_std"):
        assert len(history[key]) == 2 and np.all(np.isfinite(history[key])), key
    on, off = np.array(history["on_diagonal"]), np.array(history["off_diagonal"])
    assert np.all(on > 0) and np.all(off > 0)
    np.testing.assert_allclose(history["loss"], scale * (on + off), rtol=1e-4)
    after = weights_of(model.encoder)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, after))


def test_numpy_barlow_twins_reference_on_a_hand_case():
    # N = 2, eps = 0: standardising a column of two distinct values gives [-1, 1] or [1, -1].
    # z1 = [[1, 2], [3, 0]] -> columns [-1, 1], [1, -1]; z2 = [[0, 0], [1, 1]] -> [-1, 1], [-1, 1].
    # C = z1n^T z2n / 2 = [[1, 1], [-1, -1]]: on = (1 - 1)^2 + (1 - (-1))^2 = 4,
    # off = lambd (1 + 1) = 1 for lambd = 0.5; scale 3 -> 3 (4 + 1) = 15.
    z1, z2 = [[1.0, 2.0], [3.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]
    terms = numpy_barlow_twins_terms(z1, z2, lambd=0.5, eps=0.0)
    np.testing.assert_allclose([terms["on_diagonal"], terms["off_diagonal"]], [4.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(numpy_barlow_twins(z1, z2, lambd=0.5, scale=3.0, eps=0.0), 15.0, rtol=1e-12)


def test_loss_and_terms_match_the_numpy_reference_on_its_own_forward():
    model = make_model(lambd=0.02, scale=2.0)
    x = random_images(8)
    out = model(x, training=True)
    loss, terms = model.compute_ssl_loss(out)
    z1, z2 = to_numpy(out["z1"]), to_numpy(out["z2"])
    expected = numpy_barlow_twins(z1, z2, lambd=0.02, scale=2.0)
    np.testing.assert_allclose(to_numpy(loss), expected, rtol=1e-5)
    ref_terms = numpy_barlow_twins_terms(z1, z2, lambd=0.02)
    assert set(terms) == {"on_diagonal", "off_diagonal"}
    for name in terms:
        np.testing.assert_allclose(to_numpy(terms[name]), ref_terms[name], rtol=1e-5)
    # The trackers `fit` logs receive exactly these terms.
    model.compute_loss(x, None, out, None, training=True)
    logged = {m.name: float(to_numpy(m.result())) for m in model.metrics if m.name in terms}
    for name in terms:
        np.testing.assert_allclose(logged[name], to_numpy(terms[name]), rtol=1e-5)


def test_terms_against_numpy_cross_correlation():
    model = make_model()
    out = model(random_images(8), training=True)
    z1, z2 = (to_numpy(out[k]).astype("float64") for k in ("z1", "z2"))
    n1 = (z1 - z1.mean(0)) / z1.std(0)
    n2 = (z2 - z2.mean(0)) / z2.std(0)
    c = n1.T @ n2 / len(z1)
    _, terms = model.compute_ssl_loss(out)
    off = np.sum(c**2) - np.sum(np.diag(c) ** 2)
    # Loose: the eps of the standardisation is an implementation choice.
    np.testing.assert_allclose(to_numpy(terms["on_diagonal"]), np.sum((1 - np.diag(c)) ** 2), rtol=1e-2)
    np.testing.assert_allclose(to_numpy(terms["off_diagonal"]), model.lambd * off, rtol=1e-2)


def test_default_projector_width_scales_with_the_encoder():
    model = BarlowTwins(small_encoder(), seed=1)
    assert model.projection_dim == 8 * model.feature_dim  # 128 for 16 features
    dense = [l for l in model.projector._flatten_layers() if isinstance(l, keras.layers.Dense)]
    assert [l.units for l in dense] == [128] * 3
    wide = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(512)])
    big = BarlowTwins(wide, seed=1)
    assert big.projection_dim == 2048


def test_bad_options_and_small_batches_are_rejected():
    with pytest.raises(ValueError, match="lambd"):
        make_model(lambd=-1.0)
    with pytest.raises(ValueError, match="scale"):
        make_model(scale=0.0)
    with pytest.raises(ValueError, match="projection_dim"):
        make_model(projection_dim=0)
    model = make_model()
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="at least 4"):
        model.fit(random_images(8), batch_size=3, epochs=1, verbose=0)
