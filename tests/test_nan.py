"""NaN safety: a non-finite loss stops fit, names the term, keeps checkpoints."""

import os
import re

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder
from keras import ops

from keras_ssl.layers import OneView
from keras_ssl.methods.base import SSLModel


class Identity(keras.layers.Layer):
    def call(self, x, training=False):
        return x


class BlowsUp(SSLModel):
    """A toy method whose `variance` term turns NaN from optimizer step `at`."""

    global_views = 1
    monitored_output = "z1"
    local_outputs = ("z1",)
    loss_terms = ("variance", "invariance")

    def __init__(self, encoder, *, at=6, **kw):
        super().__init__(encoder, views=OneView(Identity()), **kw)
        self.at = at

    def ssl_forward(self, views, training):
        (h,) = self.encode(views, training)
        return {"z1": h}

    def compute_ssl_loss(self, outputs):
        invariance = ops.mean(ops.square(outputs["z1"]))
        broken = ops.cast(self.step, "float32") >= self.at  # inside a step, `step` counts the steps before it
        variance = ops.where(broken, ops.cast(float("nan"), "float32"), 0.1 * invariance)
        return invariance + variance, {"variance": variance, "invariance": invariance}


def test_nan_stops_training_names_the_term_and_keeps_the_last_good_checkpoint(tmp_path):
    model = BlowsUp(small_encoder(), at=6, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    path = str(tmp_path / "last.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    x = random_images(16)
    # 2 batches per epoch: epochs 1-3 are fine (steps 1-6), step 7 goes NaN.
    with pytest.raises(FloatingPointError, match=r"variance=nan") as info:
        model.fit(x, batch_size=8, epochs=10, verbose=0, callbacks=[checkpoint])
    assert "epoch 4" in str(info.value) and "invariance" not in str(info.value)
    assert os.path.isfile(path)
    restored = BlowsUp(small_encoder(), seed=0)
    restored.compile(optimizer=keras.optimizers.Adam(1e-3))
    restored.load_weights(path)
    assert int(restored.step) == 6, "the checkpoint is the last good epoch's"
    for w in restored.get_weights():
        assert np.all(np.isfinite(w))


class SpikeOnStep(keras.optimizers.schedules.LearningRateSchedule):
    """1e-3, except a huge rate on one optimizer step (0-based)."""

    def __init__(self, spike_step, spike=1e30):
        self.spike_step, self.spike = spike_step, spike

    def __call__(self, step):
        return ops.where(ops.equal(step, self.spike_step), self.spike, 1e-3)

    def get_config(self):
        return {"spike_step": self.spike_step, "spike": self.spike}


@pytest.mark.parametrize("checkpoint_kind", ["model_checkpoint", "backup_and_restore"])
def test_a_spike_that_breaks_the_weights_but_not_the_loss_stops_before_the_checkpoint(tmp_path, checkpoint_kind):
    import keras_ssl

    model = keras_ssl.SimCLR(small_encoder(), hidden_dim=8, projection_dim=4, seed=0)
    # 2 steps per epoch: the spike is the last step of epoch 2, whose reported loss is computed before it.
    model.compile(optimizer=keras.optimizers.SGD(SpikeOnStep(spike_step=3)))
    if checkpoint_kind == "model_checkpoint":
        path = str(tmp_path / "last.weights.h5")
        checkpoint = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    else:
        path = str(tmp_path / "backup")
        checkpoint = keras.callbacks.BackupAndRestore(path)
    with pytest.raises(FloatingPointError, match="at the end of epoch 2 while the loss stayed finite"):
        model.fit(random_images(16), batch_size=8, epochs=4, verbose=0, callbacks=[checkpoint])
    saved = keras_ssl.SimCLR(small_encoder(), hidden_dim=8, projection_dim=4, seed=0)
    saved.compile(optimizer=keras.optimizers.SGD(1e-3))
    if checkpoint_kind == "model_checkpoint":
        saved.load_weights(path)
    else:
        from keras_ssl.checkpoints import list_checkpoints  # SSLModel.fit used keras_ssl's own

        (newest,) = list_checkpoints(path)
        saved.load_weights(os.path.join(newest, "model.weights.h5"))
    assert int(saved.step) == 2, "the checkpoint on disk is epoch 1's"
    for w in saved.get_weights():
        assert np.all(np.isfinite(w)) and np.abs(w).max() < 1e12


def test_the_divergence_guard_names_a_weight_norm_that_jumps_orders_of_magnitude():
    import keras_ssl
    from keras_ssl.callbacks import StopOnNaN

    model = keras_ssl.SimCLR(small_encoder(), hidden_dim=8, projection_dim=4, seed=0)
    # A spike that leaves every weight finite and below max_abs, but 1e4 times larger.
    model.compile(optimizer=keras.optimizers.SGD(SpikeOnStep(spike_step=3, spike=1e6)))
    with pytest.raises(FloatingPointError, match=r"norm of the trainable weights jumped .* end of epoch 2"):
        model.fit(random_images(16), batch_size=8, epochs=4, verbose=0, callbacks=[StopOnNaN(divergence=100)])
    quiet = keras_ssl.SimCLR(small_encoder(), hidden_dim=8, projection_dim=4, seed=0)
    quiet.compile(optimizer=keras.optimizers.SGD(1e-3))
    assert (
        len(
            quiet.fit(random_images(16), batch_size=8, epochs=3, verbose=0, callbacks=[StopOnNaN(divergence=100)]).epoch
        )
        == 3
    )


# ----------------------------------------------- guards ahead of checkpoints, limits, divergence
def _norm(variables):
    return float(
        np.sqrt(sum(np.sum(np.square(np.asarray(keras.ops.convert_to_numpy(v), "float64"))) for v in variables))
    )


def _jump(info):
    """The two norms a divergence error names: `jumped from A (...) to B`."""
    before, after = re.search(r"jumped from (\S+) \(.*?\) to (\S+) by", str(info.value)).groups()
    return [float(before), float(after)]


class StartNorm(keras.callbacks.Callback):
    """The norm of the trainable weights when `fit` starts: the reference for the divergence baseline."""

    def on_train_begin(self, logs=None):
        self.norm = _norm(self.model.trainable_variables)


def _tiny_simclr():
    import keras_ssl

    return keras_ssl.SimCLR(small_encoder(), hidden_dim=8, projection_dim=4, seed=0)


def test_order_callbacks_moves_every_guard_ahead_of_the_first_checkpoint(tmp_path):
    from keras_ssl.callbacks import BackupAndRestore, StopOnNaN, order_callbacks

    log, history = keras.callbacks.CSVLogger(str(tmp_path / "log.csv")), keras.callbacks.History()
    weights = keras.callbacks.ModelCheckpoint(str(tmp_path / "a.weights.h5"), save_weights_only=True)
    ours, theirs = BackupAndRestore(str(tmp_path / "o")), keras.callbacks.BackupAndRestore(str(tmp_path / "k"))
    early, late, terminate = StopOnNaN(), StopOnNaN(), keras.callbacks.TerminateOnNaN()
    given = [log, early, weights, history, late, ours, terminate]
    assert order_callbacks(given) == [log, early, late, terminate, weights, history, ours]
    assert given == [log, early, weights, history, late, ours, terminate], "the list passed in is unchanged"
    for checkpoint in (ours, theirs):
        assert order_callbacks([checkpoint, late]) == [late, checkpoint]
    assert order_callbacks([history, late, log]) == [history, late, log], "no checkpoint: nothing moves"


def test_a_guard_passed_after_the_checkpoint_still_keeps_the_last_good_checkpoint(tmp_path):
    import keras_ssl

    model = _tiny_simclr()
    # 2 steps per epoch: the rate explodes on the last step of epoch 2 (issue 33's repro).
    model.compile(optimizer=keras.optimizers.SGD(SpikeOnStep(spike_step=3)))
    path = str(tmp_path / "last.weights.h5")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_freq="epoch", save_weights_only=True)
    with pytest.raises(FloatingPointError, match="at the end of epoch 2 while the loss stayed finite"):
        model.fit(
            random_images(16),
            batch_size=8,
            epochs=3,
            verbose=0,
            callbacks=[checkpoint, keras_ssl.callbacks.StopOnNaN()],
        )
    saved = _tiny_simclr()
    saved.compile(optimizer=keras.optimizers.SGD(1e-3))
    saved.load_weights(path)
    assert int(saved.step) == 2, "the checkpoint on disk is epoch 1's"
    for w in saved.get_weights():
        assert np.all(np.isfinite(w)) and np.abs(w).max() < 1e12


def test_optimizer_state_has_its_own_limit_and_the_message_says_which_tripped():
    from keras_ssl.callbacks import StopOnNaN

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x, y = np.ones((16, 4), "float32"), np.full((16, 1), 1e9, "float32")
    # Gradients near 2e9: Adam's second moment (their square) passes 1e12 while its steps, about the rate
    # each, keep the weights near their start: a sound run, which the weights' limit alone would stop.
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[StopOnNaN()])
    weights = max(np.abs(w).max() for w in model.get_weights())
    state = max(np.abs(keras.ops.convert_to_numpy(v)).max() for v in model.optimizer.variables if "float" in v.dtype)
    assert weights < 10 and state > 1e12
    cases = [
        (
            StopOnNaN(max_abs_optimizer=1e12),
            r"^optimizer variable \S+ became larger than max_abs_optimizer=1e\+12",
            "clip",
        ),
        (StopOnNaN(max_abs=weights / 2), rf"^weight \S+ became larger than max_abs={weights / 2:g} ", "learning rate"),
    ]
    for guard, message, advice in cases:
        guard.set_model(model)
        with pytest.raises(FloatingPointError, match=message) as info:
            guard.on_epoch_end(1)
        assert advice in str(info.value)
    copy = StopOnNaN(**StopOnNaN(3, 1e6, 1e20, 10).get_config())
    assert copy.get_config() == {"weights_every": 3, "max_abs": 1e6, "max_abs_optimizer": 1e20, "divergence": 10.0}


def test_divergence_compares_each_check_with_the_one_before_starting_from_the_first_step():
    from keras_ssl.callbacks import StopOnNaN

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    guard = StopOnNaN(divergence=100)
    guard.set_model(model)
    guard.on_train_begin()
    guard.on_train_batch_begin(0)  # the starting norm, before the first update
    start = _norm(model.trainable_variables)

    def scale(factor):
        for v in model.trainable_variables:
            v.assign(v * factor)

    scale(50)
    guard.on_epoch_end(0)  # 50 times the start: below the factor
    scale(50)
    guard.on_epoch_end(1)  # 2,500 times the start, but 50 times the last check: steady growth, not divergence
    scale(150)
    with pytest.raises(
        FloatingPointError, match=r"jumped from \S+ \(at the end of epoch 2\) to \S+ by the end of epoch 3"
    ) as info:
        guard.on_epoch_end(2)
    np.testing.assert_allclose(_jump(info), [2500 * start, 375000 * start], rtol=1e-3)
    model.set_weights([w / 375000 for w in model.get_weights()])
    guard.on_train_begin()  # a new fit: a new start
    guard.on_train_batch_begin(0)
    scale(101)
    with pytest.raises(FloatingPointError, match=r"\(before the first step\) to \S+ by the end of epoch 1") as info:
        guard.on_epoch_end(0)
    np.testing.assert_allclose(_jump(info), [start, 101 * start], rtol=1e-3)


def test_divergence_in_epoch_1_stops_at_the_first_step_checkpoint(tmp_path):
    from keras_ssl.callbacks import BackupAndRestore, StopOnNaN
    from keras_ssl.checkpoints import list_checkpoints

    model = _tiny_simclr()
    # 4 steps an epoch, checked and checkpointed every 2; the rate explodes on step 2, so the first check
    # (the first checkpoint) is the first to see the weights, finite and below max_abs but 1e4 times larger.
    model.compile(optimizer=keras.optimizers.SGD(SpikeOnStep(spike_step=1, spike=1e6)))
    start = StartNorm()
    callbacks = [
        start,
        StopOnNaN(weights_every=2, divergence=100),
        BackupAndRestore(str(tmp_path), save_freq=2, delete_checkpoint=False),
    ]
    with pytest.raises(FloatingPointError, match=r"\(before the first step\) to \S+ by epoch 1, batch 2") as info:
        model.fit(random_images(32), batch_size=8, epochs=2, verbose=0, callbacks=callbacks)
    assert list_checkpoints(str(tmp_path)) == [], "no checkpoint of the diverged weights"
    np.testing.assert_allclose(_jump(info), [start.norm, _norm(model.trainable_variables)], rtol=1e-3)


def test_sgd_1e6_with_one_step_an_epoch_leaves_no_diverged_epoch_1_checkpoint(tmp_path):
    from keras_ssl.callbacks import BackupAndRestore, StopOnNaN
    from keras_ssl.checkpoints import list_checkpoints

    model = _tiny_simclr()
    model.compile(optimizer=keras.optimizers.SGD(1e6))
    start = StartNorm()
    callbacks = [start, StopOnNaN(divergence=100), BackupAndRestore(str(tmp_path), delete_checkpoint=False)]
    with pytest.raises(FloatingPointError, match=r"\(before the first step\) to \S+ by the end of epoch 1") as info:
        model.fit(random_images(8), batch_size=8, epochs=3, verbose=0, callbacks=callbacks)
    assert list_checkpoints(str(tmp_path)) == []
    np.testing.assert_allclose(_jump(info), [start.norm, _norm(model.trainable_variables)], rtol=1e-3)
    assert _norm(model.trainable_variables) > 100 * start.norm
