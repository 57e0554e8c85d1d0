"""BYOL: training, loss, EMA target vs NumPy, momentum schedule, saving."""

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder

from keras_ssl.callbacks import MomentumScheduler
from keras_ssl.methods.byol import BYOL
from keras_ssl.views import OneView, RandomResizedCrop, TwoViews


def crops(seed=10):
    """Cheap random views (fast to compile); the default views get one test."""
    return TwoViews(*[RandomResizedCrop(16, (0.3, 1.0), horizontal_flip=True, seed=seed + i) for i in (0, 1)])


def make_model(default_views=False, **kw):
    kw.setdefault("hidden_dim", 16)
    kw.setdefault("projection_dim", 8)
    if not default_views:
        kw.setdefault("views", crops())
    return BYOL(small_encoder(), seed=1, **kw)


def cosine_tau(base, end, step, total):
    return end - (end - base) * (np.cos(np.pi * min(step / total, 1.0)) + 1) / 2


def online_target_pairs(model):
    pairs = []
    for online, target in ((model.encoder, model.target_encoder), (model.projector, model.target_projector)):
        pairs += [(o, t) for o, t in zip(online.weights, target.weights) if o.trainable]
    return pairs


def numpy_byol(p, z):
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return np.mean(2 - 2 * np.sum(p * z, axis=1))


# Op-by-op JAX is slow (~20 s here); the engine's eager mode is covered by test_simclr on JAX.


def test_default_views_are_two_different_pipelines():
    model = make_model(default_views=True)
    assert model.views.augment_2 is not None and model.views.augment.name != model.views.augment_2.name
    out = model(random_images(8), training=True)
    z1, z2 = (keras.ops.convert_to_numpy(out[k]) for k in ("z1", "z2"))
    assert np.all(np.isfinite(z1)) and not np.allclose(z1, z2)


def test_loss_is_symmetric_byol_loss_of_its_own_forward():
    model = make_model()
    x = random_images(8)
    out = model(x, training=True)
    np_ = {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    expected = numpy_byol(np_["p1"], np_["t2"]) + numpy_byol(np_["p2"], np_["t1"])
    got = model.compute_loss(x, None, out, None, training=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5)


def test_target_is_a_cosine_ema_of_the_online_network():
    total = 4
    model = make_model(momentum=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    x = random_images(8)
    pairs = online_target_pairs(model)
    assert not {id(t) for _, t in pairs} & {id(v) for v in model.trainable_variables}
    expected = [np.array(t) for _, t in pairs]
    for k in range(total):
        # The EMA runs at the start of step k with the online weights left by step k - 1.
        online = [np.array(o) for o, _ in pairs]
        tau = cosine_tau(0.5, 1.0, k, total)
        expected = [tau * e + (1 - tau) * o for e, o in zip(expected, online)]
        model.fit(x, batch_size=8, epochs=1, verbose=0, callbacks=[MomentumScheduler(total_steps=total)])
        for e, (_, t) in zip(expected, pairs):
            np.testing.assert_allclose(np.array(t), e, atol=1e-5)
    assert any(np.abs(np.array(o) - np.array(t)).max() > 1e-4 for o, t in pairs)


def test_target_gets_no_gradient_with_momentum_one():
    model = make_model(momentum=1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    targets = [np.array(t) for _, t in online_target_pairs(model)]
    model.fit(random_images(16), batch_size=8, epochs=1, verbose=0)
    for before, (o, t) in zip(targets, online_target_pairs(model)):
        np.testing.assert_array_equal(np.array(t), before)
    assert any(np.abs(np.array(o) - b).max() > 0 for b, (o, _) in zip(targets, online_target_pairs(model)))


@pytest.mark.parametrize("step", [0, 3, 5, 10, 12])
def test_momentum_schedule_values(step):
    model = make_model()
    model.total_steps.assign(10)
    model.step.assign(step)
    np.testing.assert_allclose(float(model.current_momentum()), cosine_tau(0.996, 1.0, step, 10), atol=1e-6)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"momentum": 1.5}, "momentum"),
        ({"momentum_end": -0.1}, "momentum_end"),
        ({"views": OneView(RandomResizedCrop(16))}, "needs 2 full-size views"),
    ],
)
def test_bad_options_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        make_model(**kw)
