"""NNCLR: nearest neighbours from the support queue, loss vs NumPy, queue, saving."""

import keras
import numpy as np
import pytest
from conftest import BACKEND, random_images, small_encoder

from keras_ssl.methods.nnclr import NNCLR
from keras_ssl.views import OneView, RandomResizedCrop, TwoViews


def make_model(**kw):
    kw.setdefault("hidden_dim", 16)
    kw.setdefault("projection_dim", 8)
    kw.setdefault("queue_size", 12)
    kw.setdefault("views", TwoViews(*[RandomResizedCrop(16, (0.3, 1.0), True, seed=s) for s in (10, 11)]))
    return NNCLR(small_encoder(), seed=1, **kw)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def numpy_info_nce(q, k, t):
    logits = unit(q) @ unit(k).T / t
    top = logits.max(axis=1, keepdims=True)
    return np.mean(top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)) - np.diag(logits))


@pytest.mark.parametrize("mode", ["default"] + (["eager"] if BACKEND != "jax" else []))
def test_fit_updates_encoder_and_fills_the_queue(mode):
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=mode == "eager")
    before = [np.array(w) for w in model.encoder.get_weights()]
    history = model.fit(random_images(16), batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(np.abs(a - np.array(b)).max() > 0 for a, b in zip(before, model.encoder.get_weights()))
    assert int(model.support.filled) == 12 and int(model.support.pointer) == 4


def test_neighbours_come_from_the_queue_read_before_enqueue():
    model = make_model()
    support = np.array(model.support.queue)
    x = random_images(8)
    out = model(x, training=True)
    z1, nn1, nn2 = numpy(out["z1"]), numpy(out["nn1"]), numpy(out["nn2"])
    np.testing.assert_allclose(nn1, support[np.argmax(unit(z1) @ support.T, axis=1)], atol=1e-6)
    np.testing.assert_allclose(nn2, support[np.argmax(unit(numpy(out["z2"])) @ support.T, axis=1)], atol=1e-6)
    # Then the batch's z1 entered the queue (rows 0..7).
    np.testing.assert_allclose(np.array(model.support.queue)[:8], unit(z1), atol=1e-5)
    np.testing.assert_array_equal(np.array(model.support.queue)[8:], support[8:])
    expected = 0.5 * (numpy_info_nce(nn1, numpy(out["p2"]), 0.1) + numpy_info_nce(nn2, numpy(out["p1"]), 0.1))
    got = model.compute_loss(x, None, out, None, training=True)
    np.testing.assert_allclose(numpy(got), expected, rtol=1e-5)


def test_nearest_neighbour_is_exact_on_a_hand_built_support_set():
    model = make_model()
    support = keras.ops.convert_to_tensor(np.eye(4, dtype="float32"))
    z = np.array([[0.1, 3.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.2]], "float32")
    np.testing.assert_array_equal(numpy(model.nearest_neighbour(z, support)), np.eye(4)[[1, 3]])


def test_queue_wraps_around_and_evaluation_does_not_enqueue():
    model = make_model(queue_size=12)
    expected, pointer = np.array(model.support.queue), 0
    for step in range(3):
        z1 = unit(numpy(model(random_images(8, seed=step), training=True)["z1"]))
        for i in range(8):
            expected[(pointer + i) % 12] = z1[i]
        pointer = (pointer + 8) % 12
    np.testing.assert_allclose(np.array(model.support.queue), expected, atol=1e-5)
    model.ssl_forward(model.views(model.preprocess(random_images(8))), training=False)
    np.testing.assert_allclose(np.array(model.support.queue), expected, atol=1e-5)


def test_whole_model_saves_the_support_queue(tmp_path):
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = random_images(16)
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "nnclr.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, NNCLR) and loaded.temperature == 0.1
    np.testing.assert_array_equal(np.array(loaded.support.queue), np.array(model.support.queue))
    assert int(loaded.support.pointer) == 4
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(loaded.fit(x, batch_size=8, epochs=1, verbose=0).history["loss"][0])
    assert int(loaded.support.pointer) == 8


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"queue_size": 0}, "queue_size"),
        ({"views": OneView(keras.layers.Identity())}, "needs 2 full-size views"),
    ],
)
def test_bad_options_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        make_model(**kw)


def test_queue_smaller_than_batch_is_rejected():
    model = make_model(queue_size=8)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="larger than the memory bank"):
        model.fit(random_images(16), batch_size=16, epochs=1, verbose=0)


def test_defaults_follow_the_paper():
    model = NNCLR(small_encoder(), seed=1)
    assert (model.temperature, model.queue_size, model.projection_dim) == (0.1, 4096, 256)
    seeds = [model.views.augment.layers[0].seed, model.views.augment_2.layers[0].seed]
    assert None not in seeds and seeds[0] != seeds[1]
