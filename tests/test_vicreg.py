"""VICReg: training, its loss and logged terms, saving, options."""

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder
from numpy_refs import vicreg as numpy_vicreg
from numpy_refs import vicreg_terms as numpy_vicreg_terms

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


def test_numpy_vicreg_reference_on_a_hand_case():
    # N = 2, D = 2, eps = 0. z1 = 0.5 [[1, 1], [-1, -1]], z2 = 0.5 [[1, -1], [-1, 1]].
    # invariance: z1 - z2 = [[0, 1], [0, -1]], mean of squares 2 / 4 = 0.5.
    # variance: every column is [0.5, -0.5], unbiased var (0.25 + 0.25) / 1 = 0.5,
    #   std sqrt(0.5); hinge 1 - sqrt(0.5) in each dim and branch; (h / 2 + h / 2) = h.
    # covariance: cov(z1) = [[.5, .5], [.5, .5]], cov(z2) = [[.5, -.5], [-.5, .5]];
    #   each branch (0.25 + 0.25) / D = 0.25, summed over branches: 0.5.
    z1 = 0.5 * np.array([[1.0, 1.0], [-1.0, -1.0]])
    z2 = 0.5 * np.array([[1.0, -1.0], [-1.0, 1.0]])
    terms = numpy_vicreg_terms(z1, z2, eps=0.0)
    hinge = 1 - np.sqrt(0.5)
    np.testing.assert_allclose([terms[k] for k in TERMS], [0.5, hinge, 0.5], rtol=1e-12)
    np.testing.assert_allclose(numpy_vicreg(z1, z2, 25.0, 25.0, 1.0, eps=0.0), 25 * 0.5 + 25 * hinge + 0.5, rtol=1e-12)


def test_loss_and_terms_match_the_numpy_reference_on_its_own_forward():
    model = make_model(sim_coeff=10.0, std_coeff=5.0, cov_coeff=3.0, eps=1e-3)
    x = random_images(8)
    out = model(x, training=True)
    loss, terms = model.compute_ssl_loss(out)
    z1, z2 = to_numpy(out["z1"]), to_numpy(out["z2"])
    expected = numpy_vicreg(z1, z2, 10.0, 5.0, 3.0, eps=1e-3)
    np.testing.assert_allclose(to_numpy(loss), expected, rtol=1e-5)
    ref_terms = numpy_vicreg_terms(z1, z2, eps=1e-3)
    assert set(terms) == set(TERMS)
    for name in TERMS:
        np.testing.assert_allclose(to_numpy(terms[name]), ref_terms[name], rtol=1e-5)
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
