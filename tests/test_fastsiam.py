"""FastSiam: its loss and gradient vs a float64 NumPy reference (lightly's loop), K=2 is SimSiam, views."""

import keras
import numpy as np
import numpy_refs_siamese as ref
import pytest
from conftest import grads, random_images, small_encoder

from keras_ssl.methods.fastsiam import FastSiam
from keras_ssl.methods.simsiam import SimSiam
from keras_ssl.views import fastsiam_views, simclr_views


def make_model(**kw):
    return FastSiam(small_encoder(), projection_dim=8, prediction_dim=4, seed=1, **kw)


def loss_of(model, ps, zs):
    return model.compute_ssl_loss({"z": list(zs), "p": list(ps), "z1": zs[0]})[0]


def test_reference_on_a_hand_computed_case():
    # Targets: mean(z2, z3) = (.5, 1), mean(z1, z3) = (1, .5), mean(z1, z2) = (.5, .5);
    # cosines 1, 1/sqrt(5), -1, so the loss is -(1/sqrt(5)) / 3.
    zs = [np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), np.array([[1.0, 1.0]])]
    ps = [np.array([[1.0, 2.0]]), np.array([[0.0, 1.0]]), np.array([[-1.0, -1.0]])]
    loss, _ = ref.fastsiam_loss(ps, zs)
    np.testing.assert_allclose(loss, -1.0 / (3.0 * np.sqrt(5.0)), rtol=1e-12)


def test_reference_gradient_is_the_finite_difference():
    rng = np.random.default_rng(0)
    ps, zs = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    _, analytic = ref.fastsiam_loss(list(ps), list(zs))
    step, numeric = 1e-6, np.zeros_like(ps)
    for index in np.ndindex(ps.shape):
        up, down = ps.copy(), ps.copy()
        up[index] += step
        down[index] -= step
        numeric[index] = (ref.fastsiam_loss(list(up), list(zs))[0] - ref.fastsiam_loss(list(down), list(zs))[0]) / 2e-6
    np.testing.assert_allclose(np.stack(analytic), numeric, atol=1e-7)


def test_loss_and_gradients_match_the_reference():
    model = make_model()  # K = 4, the paper's
    rng = np.random.default_rng(1)
    ps, zs = rng.normal(size=(4, 6, 8)).astype("float32"), rng.normal(size=(4, 6, 8)).astype("float32")
    expected, expected_grads = ref.fastsiam_loss(list(ps), list(zs))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loss_of(model, ps, zs)), expected, rtol=1e-5, atol=1e-6)
    got = grads(lambda *a: loss_of(model, a[:4], a[4:]), *ps, *zs)
    for g, e in zip(got[:4], expected_grads):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
    for g in got[4:]:  # the targets are stop-gradient means
        np.testing.assert_array_equal(g, np.zeros_like(g))
    # With K = 2 the loss is SimSiam's (the method is its subclass, so its loss applies to it).
    simsiam = SimSiam.compute_ssl_loss(model, {"p1": ps[0], "p2": ps[1], "z1": zs[0], "z2": zs[1]})[0]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loss_of(model, ps[:2], zs[:2])), keras.ops.convert_to_numpy(simsiam), rtol=1e-6
    )
    np.testing.assert_allclose(ref.fastsiam_loss(list(ps[:2]), list(zs[:2]))[0], ref.simsiam_loss(*ps[:2], *zs[:2]))


def test_forward_gives_every_view_its_projection_and_prediction():
    model = make_model(num_views=3)
    views = [keras.ops.convert_to_tensor(random_images(8, seed=s).astype("float32") / 255) for s in range(3)]
    out = model.ssl_forward(views, training=False)
    assert len(out["z"]) == len(out["p"]) == 3
    assert all(tuple(t.shape) == (8, 8) for t in out["z"] + out["p"])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(out["z1"]), keras.ops.convert_to_numpy(out["z"][0]))
    # One encoder pass over the stacked views equals a pass per view (inference BatchNorm).
    h = model.encoder(keras.ops.concatenate(views, axis=0), training=False)
    z = model.projector(h, training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["z"][2]), keras.ops.convert_to_numpy(z[16:]), atol=1e-5)


def test_views_follow_num_views_and_simsiam_recipe():
    model = make_model(num_views=6)
    assert model.global_views == model.views.num_global == 6 and FastSiam.global_views == 4
    assert FastSiam.default_views(16, seed=0).num_views == 4
    views = fastsiam_views(16, seed=0, num_views=5)
    assert views.num_views == 5 and tuple(views.augment.layers[0].scale) == (0.2, 1.0)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"num_views": 1}, "num_views"),
        ({"num_views": 3, "views": simclr_views(16, seed=0)}, "needs 3 full-size views"),
    ],
)
def test_bad_options_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        make_model(**kw)
