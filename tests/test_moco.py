"""MoCo v2 / v3: training, losses vs NumPy, queue, EMA, split BN, saving, resuming."""

import keras
import numpy as np
import pytest
from conftest import CrashAt, random_images, small_encoder

from keras_ssl.callbacks import MomentumScheduler
from keras_ssl.methods.moco import MoCo
from keras_ssl.methods.moco_v2 import MoCoV2
from keras_ssl.methods.moco_v3 import MoCoV3
from keras_ssl.views import RandomResizedCrop, TwoViews


@keras.saving.register_keras_serializable(package="test_moco")
class Flip(keras.layers.Layer):
    """A deterministic view (no seed state), for exact-resume tests."""

    def call(self, x, training=False):
        return keras.ops.flip(x, axis=2)


def crops(seed=10):
    return TwoViews(*[RandomResizedCrop(16, (0.3, 1.0), horizontal_flip=True, seed=seed + i) for i in (0, 1)])


def make_model(version=2, **kw):
    kw.setdefault("hidden_dim", 16)
    kw.setdefault("projection_dim", 8)
    kw.setdefault("views", crops())
    if version == 2:
        kw.setdefault("queue_size", 12)
    return MoCo(small_encoder(), version=version, seed=1, **kw)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_info_nce(q, k, t):
    """In-batch InfoNCE (MoCo v3's ctr): the positive on the diagonal."""
    logits = unit(q) @ unit(k).T / t
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return np.mean(lse - np.diag(logits))


def numpy_moco_v2(q, k, t, queue):
    """MoCo v2's official logits [q.k+, q.queue] / T with the label 0."""
    logits = np.concatenate([np.sum(unit(q) * unit(k), axis=1, keepdims=True), unit(q) @ unit(queue).T], 1) / t
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return np.mean(lse - logits[:, 0])


def pairs(model):
    out = []
    for online, key in ((model.encoder, model.key_encoder), (model.projector, model.key_projector)):
        out += [(o, t) for o, t in zip(online.weights, key.weights) if o.trainable]
    return out


def test_v2_loss_is_info_nce_against_the_queue_read_before_enqueue():
    model = make_model(2)
    x = random_images(8)
    queue_before = np.array(model.queue.queue)
    out = model(x, training=True)
    assert "queue" not in out  # step state stays out of the outputs; the loss read it before the enqueue
    expected = numpy_moco_v2(numpy(out["z1"]), numpy(out["k2"]), 0.2, queue_before)
    got = model.compute_loss(x, None, out, None, training=True)
    np.testing.assert_allclose(numpy(got), expected, rtol=1e-5)


def test_v3_loss_is_symmetric_and_scaled_by_two_tau():
    model = make_model(3, temperature=0.5)
    x = random_images(8)
    outputs = model(x, training=True)
    out = {k: numpy(v) for k, v in outputs.items()}
    assert "queue" not in out and not hasattr(model, "queue")
    expected = 2 * 0.5 * (numpy_info_nce(out["q1"], out["k2"], 0.5) + numpy_info_nce(out["q2"], out["k1"], 0.5))
    got = model.compute_loss(x, None, outputs, None, training=True)
    np.testing.assert_allclose(numpy(got), expected, rtol=1e-5)


def test_queue_holds_the_latest_keys_after_wrap_around():
    model = make_model(2, queue_size=12)
    expected, pointer = np.array(model.queue.queue), 0
    for step in range(3):
        keys = unit(numpy(model(random_images(8, seed=step), training=True)["k2"]))
        for i in range(8):
            expected[(pointer + i) % 12] = keys[i]
        pointer = (pointer + 8) % 12
        np.testing.assert_allclose(np.array(model.queue.queue), expected, atol=1e-5)
    assert int(model.queue.pointer) == 0 and int(model.queue.filled) == 12
    # An evaluation forward leaves the queue alone.
    model.ssl_forward(model.views(model.preprocess(random_images(8))), training=False)
    np.testing.assert_allclose(np.array(model.queue.queue), expected, atol=1e-5)


def test_key_networks_move_only_by_ema():
    model = make_model(3, momentum=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    x = random_images(8)
    assert not {id(t) for _, t in pairs(model)} & {id(v) for v in model.trainable_variables}
    model.fit(x, batch_size=8, epochs=1, verbose=0, callbacks=[MomentumScheduler(total_steps=4)])
    online, keys = [np.array(o) for o, _ in pairs(model)], [np.array(t) for _, t in pairs(model)]
    assert any(np.abs(o - k).max() > 1e-4 for o, k in zip(online, keys))
    model.fit(x, batch_size=8, epochs=1, verbose=0, callbacks=[MomentumScheduler(total_steps=4)])
    tau = 1 - 0.5 * (np.cos(np.pi * 1 / 4) + 1) / 2  # cosine 0.5 -> 1 at step 1 of 4
    for o, k, (_, t) in zip(online, keys, pairs(model)):
        np.testing.assert_allclose(np.array(t), tau * k + (1 - tau) * o, atol=1e-5)


def test_split_batch_norm_uses_sub_batch_statistics():
    model = make_model(2, split_batch_norm=True, num_splits=2)
    v = keras.ops.convert_to_tensor(random_images(8).astype("float32") / 255)
    block = [model.projector(model.encoder(c, training=True), training=True) for c in (v[:4], v[4:])]
    np.testing.assert_allclose(
        numpy(model._embed(v, True, model.encoder, model.projector)),
        np.concatenate([numpy(b) for b in block]),
        atol=1e-5,
    )
    # Keys: sub-batch g holds rows i with i % 2 == g, returned in the original order.
    strided = [numpy(model.projector(model.encoder(c, training=True), training=True)) for c in (v[0::2], v[1::2])]
    expected = np.empty_like(np.concatenate(strided))
    expected[0::2], expected[1::2] = strided
    got = numpy(model._embed(v, True, model.encoder, model.projector, interleave=True))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    whole = numpy(model.projector(model.encoder(v, training=True), training=True))
    assert np.abs(got - whole).max() > 1e-3  # full-batch statistics differ


def test_whole_model_saves_queue_and_key_networks(tmp_path):
    model = make_model(2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = random_images(16)
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "moco.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MoCoV2) and loaded.split_batch_norm
    np.testing.assert_array_equal(np.array(loaded.queue.queue), np.array(model.queue.queue))
    assert int(loaded.queue.pointer) == 4 and int(loaded.queue.filled) == 12
    for (_, a), (_, b) in zip(pairs(model), pairs(loaded)):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert np.isfinite(loaded.fit(x, batch_size=8, epochs=1, verbose=0).history["loss"][0])
    assert int(loaded.queue.pointer) == 8


def resumable_model():
    keras.utils.set_random_seed(5)
    model = make_model(2, views=TwoViews(keras.layers.Identity(), Flip()), num_splits=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def test_backup_and_restore_resumes_to_the_uninterrupted_result(tmp_path):
    x = random_images(32)
    fit = dict(batch_size=8, epochs=3, shuffle=False, verbose=0)
    reference = resumable_model()
    reference.fit(x, **fit)
    backup = lambda: keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    crashed = resumable_model()
    with pytest.raises(RuntimeError, match="simulated"):
        crashed.fit(x, callbacks=[backup(), CrashAt(epoch=1, batch=1)], **fit)
    resumed = resumable_model()
    history = resumed.fit(x, callbacks=[backup()], **fit)
    assert len(history.epoch) == 2  # it resumed at epoch 2 (from the epoch-1 backup)
    assert int(resumed.step) == int(reference.step) == 12
    np.testing.assert_allclose(np.array(resumed.queue.queue), np.array(reference.queue.queue), atol=1e-5)
    for a, b in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_defaults_follow_the_papers():
    v2 = MoCo(small_encoder(), version=2, queue_size=16, seed=1)
    v3 = MoCo(small_encoder(), version=3, seed=1)
    assert type(v2) is MoCoV2 and type(v3) is MoCoV3
    assert (v2.temperature, v2.momentum, v2.momentum_end, v2.split_batch_norm) == (0.2, 0.99, 0.99, True)
    assert (v3.temperature, v3.momentum, v3.momentum_end, v3.split_batch_norm) == (1.0, 0.99, 1.0, False)
    assert MoCoV2(small_encoder()).queue_size == 4096
    # v2: one SimCLR pipeline with crop scale (0.2, 1) for both views; v3: BYOL's asymmetric pair.
    assert v2.views.augment_2 is None and v2.views.augment.layers[0].scale == (0.2, 1.0)
    seeds = [v3.views.augment.layers[0].seed, v3.views.augment_2.layers[0].seed]
    assert None not in seeds and seeds[0] != seeds[1]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"version": 1}, "version"),
        ({"temperature": 0.0}, "temperature"),
        ({"momentum": 1.5}, "momentum"),
        ({"momentum_end": -1.0}, "momentum_end"),
        ({"queue_size": 1}, "queue_size"),
    ],
)
def test_bad_options_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        make_model(**kw)


@pytest.mark.parametrize(
    "kw, batch, match",
    [({"queue_size": 8}, 16, "larger than the memory bank"), ({"num_splits": 3}, 8, "divisible by num_splits")],
)
def test_bad_batch_sizes_are_rejected_before_training(kw, batch, match):
    model = make_model(2, **kw)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=match):
        model.fit(random_images(16), batch_size=batch, epochs=1, verbose=0)
