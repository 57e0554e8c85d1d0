"""VIbCReg: its loss and IterNorm against NumPy ports of the official code (ML4ITS/vibcreg); harness."""

import keras
import numpy as np
import pytest
from conftest import grads, small_encoder
from keras import ops
from numpy_refs_covariance import IterNorm as NumpyIterNorm
from numpy_refs_covariance import iternorm_groups as numpy_iternorm_groups
from numpy_refs_covariance import numeric_grad, vibcreg_terms

from keras_ssl.layers.iternorm import IterNorm, iternorm_groups
from keras_ssl.losses.covariance import vibcreg
from keras_ssl.losses.covariance import vibcreg_terms as keras_vibcreg_terms
from keras_ssl.methods.vibcreg import VIbCReg

MAKERS = {"vibcreg": lambda: VIbCReg(small_encoder(), projection_dim=16, iternorm_groups=4, seed=1)}
TERMS = ("invariance", "variance", "covariance")


def np_(x):
    return ops.convert_to_numpy(x)


def test_numpy_vibcreg_reference_on_a_hand_case():
    # N = 2, D = 2, eps = 0. z1 = 0.5 [[1, 1], [-1, -1]], z2 = 0.5 [[1, -1], [-1, 1]].
    # invariance: z1 - z2 = [[0, 1], [0, -1]]: 2 / 4 = 0.5.
    # variance: unbiased var 0.5 in every column, hinge h = 1 - sqrt(0.5) per view, summed: 2 h.
    # covariance: unit columns [1, -1] / sqrt(2); correlations [[1, 1], [1, 1]] and [[1, -1], [-1, 1]];
    #   off-diagonal squares 1 + 1 over 4 entries: 0.5 per view, 1.0 summed.
    z1 = 0.5 * np.array([[1.0, 1.0], [-1.0, -1.0]])
    z2 = 0.5 * np.array([[1.0, -1.0], [-1.0, 1.0]])
    terms = vibcreg_terms(z1, z2, eps=0.0)
    np.testing.assert_allclose([terms[k] for k in TERMS], [0.5, 2 * (1 - np.sqrt(0.5)), 1.0], rtol=1e-12)


@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_loss_terms_and_gradients_match_the_official_code(scale):
    rng = np.random.default_rng(0)
    z1, z2 = (scale * rng.normal(size=(2, 8, 6)) + 1.0).astype("float32")
    terms = keras_vibcreg_terms(z1, z2, eps=1e-4)
    ref = vibcreg_terms(z1, z2, eps=1e-4)
    for name in TERMS:
        np.testing.assert_allclose(np_(terms[name]), ref[name], rtol=1e-5, atol=1e-6)
    weights = dict(sim_coeff=2.0, std_coeff=3.0, cov_coeff=50.0)

    def ref_loss(a, b):
        t = vibcreg_terms(a, b, eps=1e-4)
        return 2.0 * t["invariance"] + 3.0 * t["variance"] + 50.0 * t["covariance"]

    np.testing.assert_allclose(np_(vibcreg(z1, z2, **weights)), ref_loss(z1, z2), rtol=1e-5)
    g1, g2 = grads(lambda a, b: vibcreg(a, b, **weights), z1, z2)
    np.testing.assert_allclose(g1, numeric_grad(lambda a: ref_loss(a, z2), z1), atol=1e-4)
    np.testing.assert_allclose(g2, numeric_grad(lambda b: ref_loss(z1, b), z2), atol=1e-4)


def test_iternorm_groups_follow_the_official_rule():
    for features in (1, 6, 16, 24, 30, 2048):
        for groups in (1, 3, 4, 5, 7, 64):
            assert iternorm_groups(features, groups) == numpy_iternorm_groups(features, groups), (features, groups)
    assert iternorm_groups(2048) == (64, 32)
    with pytest.raises(ValueError, match="num_groups"):
        iternorm_groups(8, 0)


def test_iternorm_matches_the_official_forward_backward_and_running_statistics():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(16, 12)) @ rng.normal(size=(12, 12)) + 2.0).astype("float32")
    upstream = rng.normal(size=(16, 12)).astype("float32")
    layer, ref = IterNorm(num_groups=3), NumpyIterNorm(12, num_groups=3)
    assert (layer.compute_output_shape((None, 12)), ref.g, ref.nc) == ((None, 12), 3, 4)
    for step in range(2):  # two training batches: the moving statistics follow PyTorch's momentum 0.1
        batch = x if step == 0 else x[::-1] * 0.5
        np.testing.assert_allclose(np_(layer(batch, training=True)), ref.forward(batch), atol=1e-4)
    np.testing.assert_allclose(np_(layer.moving_mean), ref.running_mean, atol=1e-5)
    np.testing.assert_allclose(np_(layer.moving_whitening), ref.running_wm, atol=1e-4)
    np.testing.assert_allclose(np_(layer(x, training=False)), ref.forward(x, training=False), atol=1e-4)
    # Autodiff through the Newton iterations equals the official hand-written backward.
    ref.forward(x)
    (got,) = grads(lambda a: ops.sum(IterNorm(num_groups=3)(a, training=True) * ops.convert_to_tensor(upstream)), x)
    np.testing.assert_allclose(got, ref.backward(upstream), atol=1e-3, rtol=1e-3)
    # With 7 iterations each group is whitened: about the identity covariance. (Many more diverge
    # in finite precision, in the official code as here: this Newton iteration is not self-correcting.)
    mixed = rng.normal(size=(128, 12)) * np.linspace(0.5, 2.0, 12) + rng.normal(size=(128, 1))
    y = np_(IterNorm(num_groups=3, iterations=7)(mixed.astype("float32"), training=True))
    for g in range(3):
        np.testing.assert_allclose(np.cov(y[:, 4 * g : 4 * g + 4].T, bias=True), np.eye(4), atol=1e-3)
    clone = IterNorm.from_config(layer.get_config())
    assert (clone.iterations, clone.epsilon, clone.momentum, clone.requested_groups) == (5, 1e-5, 0.9, 3)


def test_defaults_and_options():
    model = VIbCReg(small_encoder(), seed=1)
    assert model.projection_dim == 8 * model.feature_dim
    assert (model.sim_coeff, model.std_coeff, model.cov_coeff, model.eps) == (25.0, 25.0, 200.0, 1e-4)
    assert (model.whitening.num_groups, model.whitening.group_size, model.whitening.iterations) == (64, 2, 5)
    plain = VIbCReg(small_encoder(), projection_dim=8, iternorm=False, seed=1)
    assert plain.whitening is None and not any(isinstance(l, IterNorm) for l in plain._flatten_layers())
    for name in ("sim_coeff", "std_coeff", "cov_coeff", "eps"):
        with pytest.raises(ValueError, match=name):
            VIbCReg(small_encoder(), **{name: -1.0})
    with pytest.raises(ValueError, match="projection_dim"):
        VIbCReg(small_encoder(), projection_dim=0)
    assert keras.saving.get_registered_object("keras_ssl>IterNorm") is IterNorm
