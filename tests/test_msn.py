"""MSN: its loss, ME-MAX and Sinkhorn against a float64 port of the official code, patch drop, the harness."""

import numpy as np
import pytest
from conftest import grads, small_encoder
from keras import ops
from numpy_refs_msn import distributed_sinkhorn, msn_loss, numeric_grads, patch_drop_count, snn
from test_swav import Crops, to_np

from keras_ssl.backbones import vit
from keras_ssl.losses import sinkhorn
from keras_ssl.losses.prototypes import msn
from keras_ssl.methods.msn import MSN
from keras_ssl.views import msn_views


def make_model(**kw):
    kw.setdefault("num_prototypes", 16)
    kw.setdefault("hidden_dim", 16)
    kw.setdefault("output_dim", 8)
    kw.setdefault("views", Crops(seed=10))  # no colour: cheap eager steps (msn_views runs in the doctest)
    return MSN(vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2), seed=1, **kw)


def test_numpy_reference_on_hand_cases():
    # Prototypes e1, e2; tau = 1 / ln 3, so a query along e1 gets softmax([ln 3, 0]) = [3/4, 1/4].
    # The target along e1 sharpened with T = 1/2: [9, 1] / 10. Anchor views along e1, then e2.
    protos, tau = np.eye(2), 1 / np.log(3)
    np.testing.assert_allclose(snn([[2.0, 0.0]], protos, np.eye(2), tau), [[0.75, 0.25]], rtol=1e-12)
    ce, reg = msn_loss([[0.0, 5.0]], [[1.0, 0.0]], protos, tau=tau, T=0.5, use_sinkhorn=False)
    np.testing.assert_allclose(ce, 0.9 * np.log(4) + 0.1 * np.log(4 / 3), rtol=1e-12)
    np.testing.assert_allclose(reg, 0.25 * np.log(0.25) + 0.75 * np.log(0.75) + np.log(2), rtol=1e-12)
    # Two anchor views share the target; their mean assignment is uniform, so ME-MAX is 0.
    ce, reg = msn_loss([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0]], protos, tau=tau, T=0.5, use_sinkhorn=False)
    np.testing.assert_allclose(ce, (0.9 * np.log(4 / 3) + 0.1 * np.log(4) + 0.9 * np.log(4) + 0.1 * np.log(4 / 3)) / 2)
    np.testing.assert_allclose(reg, 0.0, atol=1e-15)
    # Label smoothing 0.5 with K = 2: labels [3/4, 1/4] rows, so [3/4, 1/4] -> [5/8, 3/8].
    np.testing.assert_allclose(snn([[1.0, 0.0]], protos, [[0.75, 0.25], [0.25, 0.75]], tau), [[0.625, 0.375]])
    # One Sinkhorn round on [[0.8, 0.2], [0.6, 0.4]], worked by hand.
    got = distributed_sinkhorn([[0.8, 0.2], [0.6, 0.4]], num_itr=1)
    np.testing.assert_allclose(got, [[12 / 19, 7 / 19], [9 / 23, 14 / 23]], rtol=1e-12)
    np.testing.assert_allclose(distributed_sinkhorn([[0.75, 0.25], [0.25, 0.75]]), [[0.75, 0.25], [0.25, 0.75]])
    assert patch_drop_count(196, 0.15) == 166 and patch_drop_count(16, 0.15) == 13


def _case(seed=0, views=3, batch=8, dim=8, k=16):
    # The shapes (and dtype) of the method test's outputs: eager JAX then compiles each op once.
    rng = np.random.default_rng(seed)
    anchors = rng.normal(size=(views * batch, dim))
    return [x.astype("float32") for x in (anchors, rng.normal(size=(batch, dim)), rng.normal(size=(k, dim)))]


OPTIONS = [
    dict(tau=0.1, T=0.25, use_sinkhorn=True, smoothing=0.0),  # the official ViT-S/16 config
    dict(tau=0.2, T=0.5, use_sinkhorn=False, smoothing=0.1),
]


def _ours(options):
    iters = 3 if options["use_sinkhorn"] else 0
    return dict(
        temperature=options["tau"],
        sharpen_temperature=options["T"],
        sinkhorn_iterations=iters,
        label_smoothing=options["smoothing"],
    )


@pytest.mark.parametrize("options", OPTIONS)
def test_loss_and_me_max_match_the_official_values_and_gradients(options):
    anchors, targets, protos = _case()
    expected = msn_loss(anchors, targets, protos, **options)
    got = msn(np.split(anchors, 3), targets, protos, **_ours(options))
    np.testing.assert_allclose([float(g) for g in got], expected, rtol=1e-5)
    for term in (0, 1):

        def fn(a, t, p, term=term):
            return msn(ops.split(a, 3, axis=0), t, p, **_ours(options))[term]

        g_anchor, g_target, g_proto = grads(fn, anchors, targets, protos)
        e_anchor, e_proto = numeric_grads(anchors, targets, protos, term, **options)
        assert np.abs(e_anchor).max() > 1e-3 and np.abs(e_proto).max() > 1e-3
        np.testing.assert_allclose(g_anchor, e_anchor, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(g_proto, e_proto, rtol=1e-3, atol=1e-5)
        np.testing.assert_array_equal(g_target, 0.0)  # the targets are stop-gradient


def test_keras_ssl_sinkhorn_is_the_official_distributed_sinkhorn_on_log_targets():
    rng = np.random.default_rng(3)
    q = rng.dirichlet(np.full(6, 0.3), size=10)  # sharpened-like rows, B = 10, K = 6
    for iterations in (1, 3):
        got = sinkhorn(np.log(q).astype("float32"), epsilon=1.0, iterations=iterations)
        np.testing.assert_allclose(ops.convert_to_numpy(got), distributed_sinkhorn(q, iterations), rtol=1e-4, atol=1e-6)


def test_patch_drop_keeps_the_official_count_of_distinct_uniform_patches():
    model = make_model(patch_drop=0.15)
    assert model.num_kept == patch_drop_count(16, 0.15) == 13
    assert make_model(patch_drop=0.3).num_kept == 11  # floor(11.2)
    assert make_model(patch_drop=0.0).patch_dropper is None
    ids = np.broadcast_to(np.arange(16, dtype="float32")[None, :, None], (4000, 16, 1))
    kept = ops.convert_to_numpy(model.patch_dropper(ids)[0])[..., 0].astype(int)
    assert kept.shape == (4000, 13)
    assert all(len(set(row)) == 13 for row in kept[:200])  # distinct patches
    frequency = np.bincount(kept.ravel(), minlength=16) / 4000  # each patch kept with p = 13 / 16
    np.testing.assert_allclose(frequency, 13 / 16, atol=0.03)
    again = ops.convert_to_numpy(model.patch_dropper(ids)[0])[..., 0].astype(int)
    assert not np.array_equal(again, kept)  # a fresh subset every call


def test_only_the_anchor_view_is_masked_and_the_loss_is_msn_of_the_outputs():
    model = make_model(sharpen_temperature=0.3, me_max_weight=0.5)
    model.build()
    seen = []
    encode_tokens = model.encoder.encode_tokens

    def counting(tokens, *args, **kwargs):
        seen.append(tuple(tokens.shape))
        return encode_tokens(tokens, *args, **kwargs)

    model.encoder.encode_tokens = counting
    rng = np.random.default_rng(0)
    # Given views (no augmentation ops: eager JAX compiles each op once, which is slow here).
    views = [rng.uniform(size=(8, s, s, 3)).astype("float32") for s in (16, 16, 8, 8)]
    out = model.ssl_forward(views, training=True)
    assert seen == [(8, 13, 16)]  # the focal crops and the target view keep every patch
    np_out = to_np(out)
    assert len(np_out["anchors"]) == 3 and np_out["target"].shape == (8, 8)
    target = np.array(model.target_head(model.target_encoder(views[0], training=True), training=True))
    np.testing.assert_allclose(np_out["target"], target, rtol=1e-5, atol=1e-6)  # the unmasked first view
    anchors = np.concatenate(np_out["anchors"])
    ce, reg = msn_loss(anchors, np_out["target"], np.array(model.prototypes), tau=0.1, T=0.3)
    loss, terms = model.compute_ssl_loss(out)
    np.testing.assert_allclose(float(ops.convert_to_numpy(loss)), ce + 0.5 * reg, rtol=1e-4)
    np.testing.assert_allclose(
        [float(ops.convert_to_numpy(terms[k])) for k in ("cross_entropy", "me_max")], [ce, reg], rtol=1e-4
    )


def test_rejects_a_non_vit_encoder():
    with pytest.raises(TypeError, match="ViT"):
        MSN(small_encoder((None, None, 3)), input_shape=(16, 16, 3), views=msn_views(16, local_size=8, num_local=2))
