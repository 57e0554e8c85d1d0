"""DCL / DCLW (Yeh et al. 2022, "Decoupled Contrastive Learning"): the losses, and SimCLR / MoCo v2 with them.

References: `numpy_refs_contrastive` (the paper's eq. 6 and the negative von
Mises-Fisher weight, as raminnakhli/Decoupled-Contrastive-Learning
`loss/dcl.py` and lightly `loss/dcl_loss.py`), float64, one anchor at a time.
"""

import keras
import numpy as np
import numpy_refs_contrastive as ref
import pytest
from conftest import grads, small_encoder
from numpy_refs import nt_xent as numpy_nt_xent

import keras_ssl
from keras_ssl.losses.contrastive import dcl, info_nce, nt_xent, von_mises_weights

# name -> a tiny model (for tests/test_methods.py's MAKERS)
MAKERS = {
    "simclr_dclw": lambda: keras_ssl.SimCLR(
        small_encoder(), hidden_dim=16, projection_dim=8, loss="dclw", temperature=0.1, seed=1
    ),
    "moco_v2_dcl": lambda: keras_ssl.MoCoV2(
        small_encoder(), hidden_dim=16, projection_dim=8, queue_size=12, loss="dcl", seed=1
    ),
}


def randn(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_numpy_references_on_a_hand_case():
    # Views a1 = (1, 0), a2 = (0, 1), b1 = (3, 4)/5 = (.6, .8), b2 = (0, 1); T = 1.
    # DCL drops self and twin: each anchor keeps the two views of the other image.
    #   a1: -0.6 + log(e^{a1.a2} + e^{a1.b2}) = -0.6 + log(1 + 1)        = 0.093147
    #   b1: -0.6 + log(e^{b1.a2} + e^{b1.b2}) = -0.6 + log(2 e^0.8)      = 0.893147
    #   a2: -1   + log(e^{a2.a1} + e^{a2.b1}) = -1   + log(1 + e^0.8)    = 0.171101
    #   b2: -1   + log(e^{b2.a1} + e^{b2.b1}) = same as a2               = 0.171101
    # mean = 0.332124
    z1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    z2 = np.array([[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(ref.dcl(z1, z2, 1.0), 0.33212392325386164, rtol=1e-12)
    # DCLW, sigma = 0.5: pair cosines 0.6 and 1, w_i = 2 - 2 e^{c_i/0.5} / (e^{1.2} + e^{2}).
    w = 2 - 2 * np.exp([1.2, 2.0]) / (np.exp(1.2) + np.exp(2.0))
    np.testing.assert_allclose(ref.von_mises_weights(z1, z2, 0.5), w, rtol=1e-12)
    np.testing.assert_allclose(w.mean(), 1.0)  # the weights average 1 (the paper's E_i)
    expected = np.mean(
        [-w[0] * 0.6 + np.log(2), -w[0] * 0.6 + np.log(2 * np.exp(0.8))] + 2 * [-w[1] + np.log(1 + np.exp(0.8))]
    )
    np.testing.assert_allclose(ref.dcl(z1, z2, 1.0, weights=w), expected, rtol=1e-12)
    # MoCo's form: q = a1, k = b1, queue {a2, (1, 1)}: -0.6 + log(e^0 + e^{1/sqrt 2}).
    got = ref.decoupled_info_nce(z1[:1], z2[:1], 1.0, negatives=[[0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(got, -0.6 + np.log(1 + np.exp(np.sqrt(0.5))), rtol=1e-12)
    np.testing.assert_allclose(float(dcl(z1, z2, 1.0)), 0.33212392325386164, rtol=1e-6)


@pytest.mark.parametrize("weighting", [None, "von_mises"])
def test_dcl_value_and_gradient_match_the_reference(weighting):
    z1, z2 = randn(6, 5, seed=1), randn(6, 5, seed=2)
    t, sigma = 0.3, 0.7
    w = ref.von_mises_weights(z1, z2, sigma) if weighting else None
    got = float(dcl(z1, z2, t, weighting=weighting, sigma=sigma))
    np.testing.assert_allclose(got, ref.dcl(z1, z2, t, weights=w), rtol=2e-5)
    g1, g2 = grads(lambda a, b: dcl(a, b, t, weighting=weighting, sigma=sigma), z1, z2)
    # DCLW's weights carry no gradient: the reference differentiates with them held fixed.
    want1 = ref.numeric_grad(lambda a: ref.dcl(a, z2, t, weights=w), z1)
    want2 = ref.numeric_grad(lambda b: ref.dcl(z1, b, t, weights=w), z2)
    np.testing.assert_allclose(g1, want1, atol=2e-5 * np.abs(want1).max())
    np.testing.assert_allclose(g2, want2, atol=2e-5 * np.abs(want2).max())
    np.testing.assert_allclose(float(dcl(z2, z1, t, weighting=weighting, sigma=sigma)), got, rtol=1e-5)  # symmetric
    if weighting:
        weights = keras.ops.convert_to_numpy(von_mises_weights(z1, z2, sigma))
        np.testing.assert_allclose(weights, w, rtol=1e-5)
        (gw,) = grads(lambda a: keras.ops.sum(von_mises_weights(a, z2, sigma)), z1)
        assert np.abs(gw).max() == 0  # detached, as lightly's negative_mises_fisher_weights


def test_dcl_is_nt_xent_without_the_positive_in_the_denominator():
    """NT-Xent minus DCL is, view by view, the positive's share of NT-Xent's denominator.

    For a view with positive logit `p = s+/T` and negatives `S = sum_neg exp(s/T)`
    (the same `2B - 2` other views in both losses):
    `nt_xent_i = -p + log(e^p + S)`, `dcl_i = -p + log S`, so
    `nt_xent_i - dcl_i = log(1 + e^p / S) = softplus(p - log S)` (> 0 always),
    and the losses, means over the `2B` views, differ by the mean of it.
    """
    z1, z2 = randn(5, 4, seed=3), randn(5, 4, seed=4)
    t = 0.4
    z = np.concatenate([z1, z2]).astype("float64")
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z)
    gap = []
    for i in range(n):
        twin = (i + n // 2) % n
        p = z[i] @ z[twin] / t
        negatives = sum(np.exp(z[i] @ z[j] / t) for j in range(n) if j not in (i, twin))
        gap.append(np.log1p(np.exp(p) / negatives))
    identity = np.mean(gap)
    assert identity > 0
    np.testing.assert_allclose(numpy_nt_xent(z1, z2, t) - ref.dcl(z1, z2, t), identity, rtol=1e-10)
    np.testing.assert_allclose(float(nt_xent(z1, z2, t)) - float(dcl(z1, z2, t)), identity, rtol=1e-4)


def test_decoupled_info_nce_value_and_gradient_match_the_reference():
    q, k, queue = randn(6, 5, seed=5), randn(6, 5, seed=6), randn(10, 5, seed=7)
    t, sigma = 0.2, 0.5
    for in_batch_negatives in (False, True):
        for weighting in (None, "von_mises"):
            w = ref.von_mises_weights(q, k, sigma) if weighting else None
            options = dict(in_batch_negatives=in_batch_negatives, decoupled=True, weighting=weighting, sigma=sigma)
            got = float(info_nce(q, k, t, negatives=queue, **options))

            def reference(a):
                return ref.decoupled_info_nce(a, k, t, queue, in_batch_negatives=in_batch_negatives, weights=w)

            np.testing.assert_allclose(got, reference(q), rtol=2e-5)
            (gq,) = grads(lambda a: info_nce(a, k, t, negatives=queue, **options), q)
            numeric = ref.numeric_grad(reference, q)
            np.testing.assert_allclose(gq, numeric, atol=2e-5 * np.abs(numeric).max())
    # Not decoupled: MoCo v2's InfoNCE, unchanged, above DCL's by the positive's share of the denominator.
    plain = float(info_nce(q, k, t, negatives=queue, in_batch_negatives=False))
    np.testing.assert_allclose(plain, ref.info_nce_queue(q, k, t, queue), rtol=2e-5)
    assert plain > float(info_nce(q, k, t, negatives=queue, in_batch_negatives=False, decoupled=True))


def test_argument_errors():
    z = randn(4, 3)
    with pytest.raises(ValueError, match="weighting"):
        dcl(z, z, 0.1, weighting="vmf")
    with pytest.raises(ValueError, match="sigma"):
        dcl(z, z, 0.1, weighting="von_mises", sigma=0.0)
    with pytest.raises(ValueError, match="same shape"):
        dcl(z, z[:3], 0.1)
    with pytest.raises(ValueError, match="decoupled=True"):
        info_nce(z, z, 0.2, weighting="von_mises")
    with pytest.raises(ValueError, match="loss"):
        keras_ssl.SimCLR(small_encoder(), loss="dclx")
    with pytest.raises(ValueError, match="loss"):
        keras_ssl.MoCoV2(small_encoder(), loss="nt_xent")


def test_methods_compute_their_decoupled_loss():
    z1, z2 = randn(8, 8, seed=8), randn(8, 8, seed=9)
    simclr = MAKERS["simclr_dclw"]()
    w = ref.von_mises_weights(z1, z2, 0.5)
    got = float(simclr.compute_ssl_loss({"z1": z1, "z2": z2})[0])
    np.testing.assert_allclose(got, ref.dcl(z1, z2, 0.1, weights=w), rtol=2e-5)
    moco = MAKERS["moco_v2_dcl"]()
    queue = keras.ops.convert_to_numpy(moco.queue.read())
    got = float(moco.compute_ssl_loss({"z1": z1, "k2": z2})[0])
    np.testing.assert_allclose(got, ref.decoupled_info_nce(z1, z2, 0.2, negatives=queue), rtol=2e-5)
