"""MMCR: its loss against a float64 port of the official `MMCR_Loss`, its views, the harness."""

import numpy as np
import pytest
from conftest import grads, small_encoder
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
