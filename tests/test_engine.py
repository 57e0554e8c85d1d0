"""The shared engine's momentum machinery, on a toy EMA method."""

import warnings

import keras
import numpy as np
import pytest
from conftest import BACKEND, random_images, small_encoder
from keras import ops

import keras_ssl
from keras_ssl.callbacks import MomentumScheduler
from keras_ssl.methods.base import SSLModel


class Identity(keras.layers.Layer):
    def call(self, x, training=False):
        return x


class ToyEMA(SSLModel):
    """Online encoder regresses the momentum target's features of another view."""

    global_views = 1
    momentum_pairs = (("encoder", "target"),)
    local_outputs = ("h", "t")

    def __init__(self, encoder, *, momentum=0.9, **kw):
        super().__init__(encoder, views=keras_ssl.layers.OneView(Identity()), momentum=momentum, momentum_end=1.0, **kw)
        self.seen_tau = self.add_weight(name="seen_tau", shape=(), trainable=False)

    def ssl_forward(self, views, training):
        if training:
            self.seen_tau.assign(self.current_momentum())
        (images,) = views
        (h,) = self.encode([images], training)
        (t,) = self.encode([ops.flip(images, axis=1)], training, encoder=self.target)
        return {"h": h, "t": ops.stop_gradient(t)}

    def compute_ssl_loss(self, outputs):
        return ops.mean(ops.square(outputs["h"] - outputs["t"])), {}


def cosine_tau(base, end, step, total):
    return end - (end - base) * (np.cos(np.pi * min(step / total, 1.0)) + 1) / 2


def trainable_pairs(model):
    return [(o, t) for o, t in zip(model.encoder.weights, model.target.weights) if o.trainable]


def test_target_starts_equal_and_is_not_trainable():
    model = ToyEMA(small_encoder())
    for o, t in zip(model.encoder.weights, model.target.weights):
        np.testing.assert_array_equal(np.array(o), np.array(t))
        assert not t.trainable
    target_ids = {id(v) for v in model.target.weights}
    assert not target_ids & {id(v) for v in model.trainable_variables}
    # BatchNorm layers keep training-mode behaviour (layer flag untouched).
    assert all(layer.trainable for layer in model.target.layers)


def test_ema_follows_numpy_reference_with_cosine_schedule():
    total = 4
    model = ToyEMA(small_encoder(), momentum=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    x = random_images(8)
    pairs = trainable_pairs(model)
    expected = [np.array(t) for _, t in pairs]
    for k in range(total):
        online = [np.array(o) for o, _ in pairs]
        tau = cosine_tau(0.5, 1.0, k, total)
        expected = [tau * e + (1 - tau) * o for e, o in zip(expected, online)]
        model.fit(x, batch_size=8, epochs=1, verbose=0, callbacks=[MomentumScheduler(total_steps=total)])
        np.testing.assert_allclose(float(model.seen_tau), tau, atol=1e-6)
        for e, (_, t) in zip(expected, pairs):
            np.testing.assert_allclose(np.array(t), e, atol=1e-5)
    assert int(model.step) == total
    # The online network moved, so the EMA was not trivially equal to it.
    assert any(np.abs(np.array(o) - np.array(t)).max() > 1e-4 for o, t in pairs)


def test_target_batchnorm_uses_batch_statistics():
    model = ToyEMA(small_encoder())
    model.compile(optimizer="sgd")
    bn = [l for l in model.target.layers if isinstance(l, keras.layers.BatchNormalization)][0]
    before = np.array(bn.moving_mean)
    model.fit(random_images(8), batch_size=8, epochs=1, verbose=0)
    assert np.abs(np.array(bn.moving_mean) - before).max() > 0


@pytest.mark.skipif(BACKEND == "torch", reason="Keras rejects steps_per_execution > 1 on torch")
def test_schedule_counts_every_step_with_steps_per_execution():
    model = ToyEMA(small_encoder(), momentum=0.5)
    model.compile(optimizer="sgd", steps_per_execution=2)
    model.fit(random_images(16), batch_size=4, epochs=3, verbose=0)
    # 4 steps per epoch, 3 epochs: 12 steps, schedule over 12 steps.
    assert int(model.step) == 12 and int(model.total_steps) == 12
    np.testing.assert_allclose(float(model.seen_tau), cosine_tau(0.5, 1.0, 11, 12), atol=1e-6)


def test_schedule_continues_with_initial_epoch():
    # fit(epochs=3, initial_epoch=1) after one epoch: the schedule spans all
    # 3 epochs (fit's `epochs` is the run's end) and the step counter goes on.
    model = ToyEMA(small_encoder(), momentum=0.5)
    model.compile(optimizer="sgd")
    x = random_images(16)
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    model.fit(x, batch_size=4, epochs=3, initial_epoch=1, verbose=0)
    assert int(model.step) == 12 and int(model.total_steps) == 12
    np.testing.assert_allclose(float(model.seen_tau), cosine_tau(0.5, 1.0, 11, 12), atol=1e-6)


def test_scheduler_overrides_end_points_on_a_compiled_step():
    model = ToyEMA(small_encoder(), momentum=0.5)
    model.compile(optimizer="sgd")
    x = random_images(8)
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    model.fit(x, batch_size=8, epochs=1, verbose=0, callbacks=[MomentumScheduler(momentum=0.8, momentum_end=0.8)])
    np.testing.assert_allclose(float(model.seen_tau), 0.8, atol=1e-6)
    # The live schedule is what the config saves (one source of truth).
    config = model.get_config()
    assert config["momentum"] == pytest.approx(0.8) and config["momentum_end"] == pytest.approx(0.8)
    assert model.momentum == pytest.approx(0.8)


def test_momentum_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="`momentum` must be in"):
        ToyEMA(small_encoder(), momentum=1.5)


def test_momentum_stays_and_warns_when_fit_cannot_tell_the_run_length():
    model = ToyEMA(small_encoder(), momentum=0.5)
    model.compile(optimizer="sgd")
    x = random_images(8)

    def batches():
        for _ in range(2):
            yield (x[:4],)

    with pytest.warns(UserWarning, match="steps_per_epoch"):
        model.fit(batches(), epochs=1, verbose=0)
    np.testing.assert_allclose(float(model.seen_tau), 0.5, atol=1e-6)
    assert int(model.total_steps) == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(batches(), epochs=1, steps_per_epoch=2, verbose=0)  # a known length
    assert not [w for w in caught if "EMA momentum" in str(w.message)]
    assert int(model.total_steps) == 2
