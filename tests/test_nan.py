"""NaN safety: a non-finite loss stops fit, names the term, keeps checkpoints."""

import os

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
