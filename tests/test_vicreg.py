"""VICReg: training, its loss and logged terms, saving, options."""

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder

from keras_ssl import losses
from keras_ssl.methods.vicreg import VICReg

TERMS = ("invariance", "variance", "covariance")


def make_model(**kw):
    kw.setdefault("projection_dim", 32)
    return VICReg(small_encoder(), seed=1, **kw)


def weights_of(layer):
    return [np.array(w) for w in layer.get_weights()]


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("mode", ["default", "eager"])
def test_fit_updates_encoder_and_logs_terms_that_make_the_loss(mode):
    coeffs = {"sim_coeff": 20.0, "std_coeff": 30.0, "cov_coeff": 2.0}
    model = make_model(**coeffs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=mode == "eager")
    before = weights_of(model.encoder)
    # One step per epoch, so each logged value is that step's value.
    history = model.fit(random_images(8), batch_size=8, epochs=2, verbose=0).history
    for key in ("loss", "z_std") + TERMS:
        assert len(history[key]) == 2 and np.all(np.isfinite(history[key])), key
    inv, var, cov = (np.array(history[k]) for k in TERMS)
    assert np.all(inv > 0) and np.all(var > 0) and np.all(cov > 0)
    np.testing.assert_allclose(history["loss"], 20 * inv + 30 * var + 2 * cov, rtol=1e-4)
    after = weights_of(model.encoder)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, after))


def test_loss_and_terms_match_the_losses_functions_on_its_own_forward():
    model = make_model(sim_coeff=10.0, std_coeff=5.0, cov_coeff=3.0, eps=1e-3)
    x = random_images(8)
    out = model(x, training=True)
    loss, terms = model.compute_ssl_loss(out)
    expected = losses.vicreg(out["z1"], out["z2"], 10.0, 5.0, 3.0, eps=1e-3)
    np.testing.assert_allclose(to_numpy(loss), to_numpy(expected), rtol=1e-5)
    ref_terms = losses.vicreg_terms(out["z1"], out["z2"], eps=1e-3)
    assert set(terms) == set(TERMS)
    for name in TERMS:
        np.testing.assert_allclose(to_numpy(terms[name]), to_numpy(ref_terms[name]), rtol=1e-5)
    # An independent NumPy reference of the two simplest terms.
    z1, z2 = (to_numpy(out[k]).astype("float64") for k in ("z1", "z2"))
    np.testing.assert_allclose(to_numpy(terms["invariance"]), np.mean((z1 - z2) ** 2), rtol=1e-4)
    hinge = [np.mean(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-3))) for z in (z1, z2)]
    np.testing.assert_allclose(to_numpy(terms["variance"]), np.mean(hinge), rtol=1e-4)
    # The trackers `fit` logs receive exactly these terms.
    model.compute_loss(x, None, out, None, training=True)
    logged = {m.name: float(to_numpy(m.result())) for m in model.metrics if m.name in TERMS}
    for name in TERMS:
        np.testing.assert_allclose(logged[name], to_numpy(terms[name]), rtol=1e-5)


def test_default_projector_width_scales_with_the_encoder():
    model = VICReg(small_encoder(), seed=1)
    assert model.projection_dim == 8 * model.feature_dim
    dense = [l for l in model.projector._flatten_layers() if isinstance(l, keras.layers.Dense)]
    assert [l.units for l in dense] == [8 * model.feature_dim] * 3
    assert (model.sim_coeff, model.std_coeff, model.cov_coeff, model.eps) == (25.0, 25.0, 1.0, 1e-4)


def test_whole_model_saves_loads_and_continues_training(tmp_path):
    model = make_model(sim_coeff=10.0, cov_coeff=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = random_images(16)
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "vicreg.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, VICReg)
    assert (loaded.sim_coeff, loaded.std_coeff, loaded.cov_coeff) == (10.0, 25.0, 0.5)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    history = loaded.fit(x, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and "variance" in history
    assert int(loaded.optimizer.iterations) == 4


def test_bad_options_and_small_batches_are_rejected():
    for name in ("sim_coeff", "std_coeff", "cov_coeff", "eps"):
        with pytest.raises(ValueError, match=name):
            make_model(**{name: -1.0})
    with pytest.raises(ValueError, match="at least one"):
        make_model(sim_coeff=0.0, std_coeff=0.0, cov_coeff=0.0)
    with pytest.raises(ValueError, match="projection_dim"):
        make_model(projection_dim=0)
    model = make_model()
    model.compile(optimizer="adam")
    # Unbiased variances need 2 samples; VICReg keeps the engine's minimum.
    with pytest.raises(ValueError, match="at least 2"):
        model.fit(random_images(8), batch_size=1, epochs=1, verbose=0)
