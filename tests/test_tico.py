"""TiCo: its loss, gradients and running covariance against lightly's TiCoLoss (NumPy port); harness."""

import numpy as np
import pytest
from conftest import grads, small_encoder
from keras import ops
from numpy_refs_covariance import numeric_grad, tico_covariance, tico_terms, tico_terms_given

from keras_ssl.losses.covariance import tico
from keras_ssl.losses.covariance import tico_terms as keras_tico_terms
from keras_ssl.methods.tico import TiCo

MAKERS = {"tico": lambda: TiCo(small_encoder(), projection_dim=16, hidden_dim=32, seed=1)}
TERMS = ("invariance", "covariance_contrast")


def np_(x):
    return ops.convert_to_numpy(x)


def sample(seed, b=8, d=6):
    rng = np.random.default_rng(seed)
    z1, z2 = rng.normal(size=(2, b, d)).astype("float32")
    a = rng.normal(size=(d, d))
    return z1, z2, (a @ a.T / d).astype("float32")  # a symmetric PSD covariance


def test_numpy_tico_reference_on_a_hand_case():
    # z_a = I (two orthogonal unit rows), z_b = [[1, 0], [1, 0]], C = 0, beta = 0.5:
    # B = z_a^T z_a / 2 = I / 2, C' = 0.5 * B = I / 4.
    # invariance: cosines 1 and 0: 1 - 1/2 = 0.5; contrast: z C' z^T = 1/4 for each row.
    z_a, z_b = np.eye(2), np.array([[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(tico_covariance(z_a, np.zeros((2, 2)), 0.5), np.eye(2) / 4, rtol=1e-12)
    terms = tico_terms(3 * z_a, z_b, np.zeros((2, 2)), 0.5)  # rows are normalised first
    np.testing.assert_allclose([terms[k] for k in TERMS], [0.5, 0.25], rtol=1e-12)


@pytest.mark.parametrize("beta, rho", [(0.9, 8.0), (0.0, 20.0), (0.5, 0.0)])
def test_loss_terms_and_gradients_match_lightly(beta, rho):
    z1, z2, c = sample(0)
    terms = keras_tico_terms(z1, z2, c, beta)
    ref = tico_terms(z1, z2, c, beta)
    for name in TERMS:
        np.testing.assert_allclose(np_(terms[name]), ref[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np_(tico(z1, z2, c, beta, rho)), ref["invariance"] + rho * ref["covariance_contrast"], rtol=1e-5
    )
    # The batch term of C is detached (lightly #1484): the gradient sees C' as a constant.
    c_new = tico_covariance(z1, c, beta)
    g1, g2 = grads(lambda a, b: tico(a, b, c, beta, rho), z1, z2)

    def ref_loss(a, b):
        t = tico_terms_given(a, b, c_new)
        return t["invariance"] + rho * t["covariance_contrast"]

    np.testing.assert_allclose(g1, numeric_grad(lambda a: ref_loss(a, z2), z1), atol=2e-5)
    np.testing.assert_allclose(g2, numeric_grad(lambda b: ref_loss(z1, b), z2), atol=2e-5)


def test_bad_loss_arguments_are_rejected():
    z1, z2, c = sample(1)
    with pytest.raises(ValueError, match="beta"):
        tico(z1, z2, c, beta=1.0)
    with pytest.raises(ValueError, match="rho"):
        tico(z1, z2, c, rho=-1.0)
    with pytest.raises(ValueError, match="batch size"):
        tico(z1[:1], z2[:1], c)


def test_running_covariance_replayed_over_three_updates():
    model = TiCo(small_encoder(), projection_dim=6, hidden_dim=16, beta=0.7, rho=3.0, seed=1)
    c = np.zeros((6, 6))
    for step in range(3):
        z1, z2, _ = sample(10 + step)
        out = {"z1": ops.convert_to_tensor(z1), "z2": ops.convert_to_tensor(z2)}
        # The loss reads the covariance before this batch (C_prev); update_state then stores C'.
        loss, terms = model.compute_ssl_loss(out)
        ref = tico_terms(z1, z2, c, 0.7)
        np.testing.assert_allclose([np_(terms[k]) for k in TERMS], [ref[k] for k in TERMS], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np_(loss), ref["invariance"] + 3.0 * ref["covariance_contrast"], rtol=1e-5)
        model.update_state(out)
        c = tico_covariance(z1, c, 0.7)  # from the online view z1 only
        np.testing.assert_allclose(np_(model.covariance), c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.trace(c), 1 - 0.7**3, rtol=1e-9)  # each batch term has unit trace


def test_defaults_and_options():
    model = TiCo(small_encoder(), seed=1)
    assert (model.projection_dim, model.hidden_dim, model.beta, model.rho) == (256, 4 * model.feature_dim, 0.9, 8.0)
    assert (model.momentum, model.momentum_end) == (0.99, 1.0)
    for kwargs, name in (({"beta": 1.0}, "beta"), ({"rho": -1.0}, "rho"), ({"projection_dim": 0}, "projection_dim")):
        with pytest.raises(ValueError, match=name):
            TiCo(small_encoder(), **kwargs)
