"""MMCR: its loss against a float64 port of the official `MMCR_Loss` and `MMCR_Momentum_Loss`,
its views, its momentum variant through the harness."""

import keras
import numpy as np
import pytest
from conftest import grads, random_images, small_encoder
from method_harness import run_method_test
from numpy_refs_spectral import mmcr_loss, numeric_grads

from keras_ssl.losses.manifold import mmcr, nuclear_norm
from keras_ssl.methods.mmcr import MMCR
from keras_ssl.views import ManyViews, mmcr_views

MAKERS = {"mmcr": lambda: MMCR(small_encoder(), num_views=3, projection_dim=8, hidden_dim=16, seed=1)}


def test_numpy_reference_on_a_hand_case():
    # Image 0: views e1, e2 -> centroid (1/2, 1/2); image 1: views e1, e1 -> centroid (1, 0).
    # For a 2x2 matrix, s1 + s2 = sqrt(||A||_F^2 + 2 |det A|): C = [[.5, .5], [1, 0]] has
    # ||C||_F^2 = 1.5 and |det C| = 0.5, so ||C||_* = sqrt(2.5). The views' own matrices:
    # [[1, 0], [0, 1]] has nuclear norm 2, [[1, 0], [1, 0]] sqrt(2). Scaling a view changes nothing.
    z = np.array([[[3.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [2.0, 0.0]]])
    assert mmcr_loss(z) == pytest.approx(-np.sqrt(2.5), rel=1e-12)
    assert mmcr_loss(z, lmbda=0.5) == pytest.approx(0.5 * (2 + np.sqrt(2)) / 2 - np.sqrt(2.5), rel=1e-12)
    assert float(nuclear_norm(np.array([[1.0, 1.0], [0.0, 1.0]], "float32"))) == pytest.approx(np.sqrt(5), rel=1e-6)
    assert float(mmcr(z.astype("float32"), lmbda=0.5)) == pytest.approx(mmcr_loss(z, 0.5), rel=1e-6)


@pytest.mark.parametrize("lmbda", [0.0, 0.3])
@pytest.mark.parametrize("shape", [(6, 3, 5), (7, 4, 3)])  # B < D and B > D, K < D and K > D
def test_loss_and_gradient_match_the_official_loss(lmbda, shape):
    z = np.random.default_rng(sum(shape)).normal(size=shape).astype("float32")
    np.testing.assert_allclose(float(mmcr(z, lmbda)), mmcr_loss(z, lmbda), rtol=1e-5)
    (got,) = grads(lambda t: mmcr(t, lmbda), z)
    (want,) = numeric_grads(lambda t: mmcr_loss(t, lmbda), z)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="lmbda"):
        mmcr(np.ones((2, 2, 3)), lmbda=-1.0)
    with pytest.raises(ValueError, match="rank 3"):
        mmcr(np.ones((2, 3)))
    for bad in ({"num_views": 1}, {"lmbda": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            MMCR(small_encoder(), **bad)


def test_views_follow_num_views():
    model = MAKERS["mmcr"]()
    assert isinstance(model.views, ManyViews) and model.views.num_views == model.global_views == 3
    assert MMCR.global_views == 8 and MMCR.default_views(16).num_views == 8  # the class default (CLI)
    assert mmcr_views(16, num_views=5, min_crop_scale=0.3).num_views == 5
    with pytest.raises(ValueError, match="full-size view"):  # a maker of another number of views
        MMCR(small_encoder(), num_views=4, views=mmcr_views(16, num_views=3))


def mmcr_momentum_loss(z, z_m, lmbda=0.0):
    """Float64 port of ThomasYerxa/mmcr `mmcr/imagenet/loss_mmcr_momentum.py`, `MMCR_Momentum_Loss.forward`
    (one process): rows normalised, `(B N) C -> B C N`, centroids `(mean_N z + mean_N z_m) * 0.5`,
    `loss = -svdvals(centroids).sum() + lmbda * svdvals(z_local).sum() / B` (the online views only)."""
    z, z_m = (np.asarray(x, np.float64) for x in (z, z_m))
    z, z_m = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (z, z_m))
    local, local_m = np.transpose(z, (0, 2, 1)), np.transpose(z_m, (0, 2, 1))
    local_nuc = sum(np.linalg.svd(m, compute_uv=False).sum() for m in local) if lmbda else 0.0
    centroids = (local.mean(axis=-1) + local_m.mean(axis=-1)) * 0.5
    return float(-np.linalg.svd(centroids, compute_uv=False).sum() + lmbda * local_nuc / len(z))


def test_momentum_loss_and_gradient_match_the_official_loss():
    # Image 0: online views e1, e1 and momentum views e2, e2 -> centroid (1/2, 1/2); image 1: all e2 ->
    # (0, 1). C = [[.5, .5], [0, 1]]: ||C||_F^2 = 1.5, |det C| = 0.5, so ||C||_* = sqrt(1.5 + 2 * 0.5).
    # The per-image term reads the online views only: [[1, 0], [1, 0]] and [[0, 1], [0, 1]], sqrt(2) each.
    z = np.array([[[3.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 2.0]]])
    z_m = np.array([[[0.0, 1.0], [0.0, 2.0]], [[0.0, 1.0], [0.0, 1.0]]])
    assert mmcr_momentum_loss(z, z_m) == pytest.approx(-np.sqrt(2.5), rel=1e-12)
    assert mmcr_momentum_loss(z, z_m, 0.5) == pytest.approx(0.5 * np.sqrt(2) - np.sqrt(2.5), rel=1e-12)
    got = float(mmcr(z.astype("float32"), 0.5, z_m.astype("float32")))
    assert got == pytest.approx(0.5 * np.sqrt(2) - np.sqrt(2.5), rel=1e-6)
    z, z_m = np.random.default_rng(7).normal(size=(2, 6, 3, 5)).astype("float32")
    for lmbda in (0.0, 0.3):
        np.testing.assert_allclose(float(mmcr(z, lmbda, z_m)), mmcr_momentum_loss(z, z_m, lmbda), rtol=1e-5)
        got, got_m = grads(lambda a, b: mmcr(a, lmbda, b), z, z_m)
        (want,) = numeric_grads(lambda a: mmcr_momentum_loss(a, z_m, lmbda), z)
        np.testing.assert_allclose(got, want, atol=2e-5)
        np.testing.assert_array_equal(got_m, 0.0)  # the momentum network is a target
    with pytest.raises(ValueError, match="z_momentum"):
        mmcr(z, 0.0, z_m[:, :2])


def momentum_mmcr():
    return MMCR(small_encoder(), num_views=2, projection_dim=8, hidden_dim=16, momentum=0.9, seed=1)


def test_momentum_branch_sees_the_same_views_and_enters_the_centroid():
    model = momentum_mmcr()
    assert model.momentum_pairs == (("encoder", "momentum_encoder"), ("projector", "momentum_projector"))
    assert (model.momentum, model.momentum_end) == (0.9, 0.9)  # constant, as the official tau
    assert MMCR(small_encoder(), seed=1).momentum_pairs == () and MMCR.momentum_pairs == ()
    views = [random_images(8, seed=s).astype("float32") / 255.0 for s in (1, 2)]
    out = model.ssl_forward(views, training=True)
    # The projector runs once over both views (its BatchNorm spans them), as the official (B N) batch.
    features = model.encoder(keras.ops.concatenate(views, axis=0), training=True)
    z = keras.ops.convert_to_numpy(model.projector(features, training=True))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["z"]), np.stack([z[:8], z[8:]], axis=1), atol=1e-5)
    # The targets start as copies: same projections; then the loss is the official one.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["z_momentum"]), np.stack([z[:8], z[8:]], 1), atol=1e-5)
    z_m = np.random.default_rng(0).normal(size=(8, 2, 8)).astype("float32")
    loss, terms = model.compute_ssl_loss({**out, "z_momentum": z_m})
    want = mmcr_momentum_loss(keras.ops.convert_to_numpy(out["z"]), z_m)
    assert terms == {} and float(keras.ops.convert_to_numpy(loss)) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="momentum"):
        MMCR(small_encoder(), momentum=1.5)
    with pytest.raises(TypeError, match="momentum"):
        MMCR(small_encoder(), momentum_end=1.0)


def test_momentum_variant_passes_the_method_harness(tmp_path):
    loaded = run_method_test(momentum_mmcr, random_images(16), tmp_path)
    assert loaded.momentum == 0.9 and loaded.gathered_outputs == ("z", "z1", "z_momentum")
    # Two EMA steps at 0.9 leave the momentum encoder behind the online one.
    online, target = loaded.encoder.get_weights(), loaded.momentum_encoder.get_weights()
    assert any(np.abs(a - b).max() > 0 for a, b in zip(online, target))
