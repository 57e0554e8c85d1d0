"""W-MSE: whitening and loss against a float64 port of the official code, sub-batch draws, the harness."""

import keras
import numpy as np
import pytest
from conftest import grads, random_images, small_encoder
from keras import ops
from numpy_refs_spectral import numeric_grads, whiten, wmse_loss

from keras_ssl.losses.whitening import cholesky_whiten, wmse
from keras_ssl.methods.wmse import WMSE

MAKERS = {"wmse": lambda: WMSE(small_encoder(), projection_dim=4, hidden_dim=16, w_size=8, seed=1)}


def dense(t):
    # TensorFlow returns the gradient of a gather as IndexedSlices; a product makes it a tensor.
    return t * ops.ones_like(t)


def ill_conditioned(rng, n, scales):
    """`n` rows whose covariance has eigenvalues about `scales ** 2`, in a random basis."""
    basis, _ = np.linalg.qr(rng.normal(size=(len(scales), len(scales))))
    return rng.normal(size=(n, len(scales))) * np.asarray(scales) @ basis


def test_numpy_reference_on_hand_cases():
    # D = 1: rows 1, 3 have mean 2 and unbiased variance 2, so they whiten to -+1/sqrt(2).
    np.testing.assert_allclose(whiten([[1.0], [3.0]]), [[-(0.5**0.5)], [0.5**0.5]], rtol=1e-12)
    # Shrinkage eps = 1/2: variance (2 + 1) / 2 = 1.5.
    np.testing.assert_allclose(whiten([[1.0], [3.0]], eps=0.5), [[-(1.5**-0.5)], [1.5**-0.5]], rtol=1e-12)
    # The whitened rows have identity covariance, and W is lower triangular: the first
    # coordinate is only standardised.
    x = ill_conditioned(np.random.default_rng(0), 12, [1.0, 0.5, 0.1])
    w = whiten(x)
    np.testing.assert_allclose(np.cov(w, rowvar=False), np.eye(3), atol=1e-12)
    np.testing.assert_allclose(w[:, 0], (x[:, 0] - x[:, 0].mean()) / x[:, 0].std(ddof=1), rtol=1e-12)
    # Opposite views whiten to opposite rows: cos = -1, loss 4; equal views: 0.
    assert wmse_loss([[[1.0], [3.0]], [[-1.0], [-3.0]]], w_size=2) == pytest.approx(4.0, rel=1e-12)
    assert wmse_loss([x, 2 * x + 1], w_size=12) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_whitening_and_its_gradient_match_the_official_whitening(eps):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 8, 3)).astype("float32")  # two sub-batches, whitened on their own
    probe = rng.normal(size=z.shape).astype("float32")
    got = ops.convert_to_numpy(cholesky_whiten(z, eps))
    np.testing.assert_allclose(got, np.stack([whiten(b, eps) for b in z]), atol=1e-5)
    if eps == 0:
        np.testing.assert_allclose(np.cov(got[0], rowvar=False), np.eye(3), atol=1e-5)
    (g,) = grads(lambda t: ops.sum(cholesky_whiten(t, eps) * ops.convert_to_tensor(probe)), z)
    (want,) = numeric_grads(lambda t: np.sum(np.stack([whiten(b, eps) for b in t]) * probe), z)
    np.testing.assert_allclose(g, want, atol=1e-4)


def test_loss_and_gradient_match_the_official_loss_over_views_and_draws():
    rng = np.random.default_rng(2)
    views = [rng.normal(size=(8, 3)).astype("float32") for _ in range(3)]
    orders = np.stack([rng.permutation(8) for _ in range(2)])
    np.testing.assert_allclose(float(wmse(views, 4, orders)), wmse_loss(views, 4, orders), rtol=1e-5)
    np.testing.assert_allclose(float(wmse(views, 4, orders, eps=0.1)), wmse_loss(views, 4, orders, 0.1), rtol=1e-5)
    got = grads(lambda *t: wmse([dense(v) for v in t], 4, orders), *views)
    want = numeric_grads(lambda *t: wmse_loss(t, 4, orders), *views)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4)


def test_an_ill_conditioned_sub_batch_stays_close_to_float64():
    # Covariance condition number ~4e6: float32 Cholesky of the covariance loses ~0.1-0.3 of the
    # gradient here; the QR route keeps the error relative to the largest entry below 1e-3.
    rng = np.random.default_rng(0)
    a = ill_conditioned(rng, 16, [1.0, 1.0, 1e-3, 1e-3])
    b = a + 0.3 * ill_conditioned(rng, 16, [1.0, 1.0, 1e-3, 1e-3])
    assert np.linalg.cond(np.cov(a[:8], rowvar=False)) > 1e6
    a, b = a.astype("float32"), b.astype("float32")
    np.testing.assert_allclose(float(wmse([a, b], 8)), wmse_loss([a, b], 8), atol=1e-4)
    np.testing.assert_allclose(ops.convert_to_numpy(cholesky_whiten(a[:8])), whiten(a[:8]), atol=1e-3)
    got = grads(lambda x, y: wmse([dense(x), dense(y)], 8), a, b)
    want = numeric_grads(lambda x, y: wmse_loss([x, y], 8), a, b)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-3 * np.abs(w).max())


def test_bad_arguments_are_rejected():
    z = np.ones((6, 2), "float32")
    with pytest.raises(ValueError, match="divide"):
        wmse([z, z], w_size=4)
    with pytest.raises(ValueError, match="at least 2 views"):
        wmse([z], w_size=3)
    with pytest.raises(ValueError, match="eps"):
        cholesky_whiten(z, eps=2.0)
    with pytest.raises(ValueError, match="must exceed"):
        WMSE(small_encoder(), projection_dim=8, w_size=8)
    for bad in ({"num_views": 1}, {"w_iter": 0}, {"eps": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            WMSE(small_encoder(), projection_dim=4, w_size=8, **bad)
    model = MAKERS["wmse"]()
    with pytest.raises(ValueError, match="multiple of it"):
        model.check_batch_size(12)


def test_sub_batch_draws_come_from_the_saved_seed_generator():
    model = WMSE(small_encoder(), num_views=3, projection_dim=3, hidden_dim=16, w_size=4, w_iter=2, seed=1)
    assert model.views.num_views == 3 and WMSE.default_views(16).num_views == 2
    rng = np.random.default_rng(3)
    outputs = {"z": [rng.normal(size=(8, 3)).astype("float32") for _ in range(3)]}
    state = ops.convert_to_numpy(model.shuffle_seed.state)
    loss, terms = model.compute_ssl_loss(outputs)
    # Replay the two draws from a generator in the same state.
    replay = keras.random.SeedGenerator(0)
    replay.state.assign(state)
    orders = [ops.convert_to_numpy(keras.random.shuffle(ops.arange(8), seed=replay)) for _ in range(2)]
    assert terms == {} and not np.array_equal(orders[0], orders[1])
    np.testing.assert_allclose(float(loss), wmse_loss(outputs["z"], 4, orders), rtol=1e-5)
    np.testing.assert_array_equal(ops.convert_to_numpy(model.shuffle_seed.state), ops.convert_to_numpy(replay.state))
    assert any("seed_generator_state" in v.path for v in model.non_trainable_variables)  # saved and resumed


def test_encoder_sees_each_view_alone_and_the_projector_all_views():
    # The official `WMSE.forward`: `h = [model(x) for x in samples]`, then `head(torch.cat(h))`.
    model = WMSE(small_encoder(), projection_dim=3, hidden_dim=16, w_size=4, seed=1)
    views = [random_images(8, seed=s).astype("float32") / 255.0 for s in (1, 2)]
    out = model.ssl_forward(views, training=True)
    features = ops.concatenate([model.encoder(v, training=True) for v in views], axis=0)
    want = ops.convert_to_numpy(model.projector(features, training=True))
    got = np.concatenate([ops.convert_to_numpy(z) for z in out["z"]])
    np.testing.assert_allclose(got, want, atol=1e-5)
