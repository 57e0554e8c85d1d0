"""SwAV and its Prototypes layer: training, loss, prototype freezing, queue, saving."""

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder
from keras import ops
from numpy_refs import sinkhorn as numpy_sinkhorn
from numpy_refs import swav as numpy_swav

from keras_ssl.layers import OneView, RandomResizedCrop, ViewMaker
from keras_ssl.layers.heads import Prototypes
from keras_ssl.methods.swav import SwAV


@keras.saving.register_keras_serializable(package="keras_ssl_tests")
class Crops(ViewMaker):
    """Cheap multi-crop (no colour): 2 global 16px crops then local 8px ones."""

    num_global = 2

    def __init__(self, num_local=2, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.num_local, self.seed = num_local, seed
        self.crops = [
            RandomResizedCrop(16 if i < 2 else 8, (0.3, 1.0) if i < 2 else (0.1, 0.3), seed=seed + i)
            for i in range(2 + num_local)
        ]

    def build(self, input_shape):
        for crop in self.crops:
            crop.build(input_shape)

    def call(self, x, training=True):
        return [crop(x, training=training) for crop in self.crops]

    def view_shapes(self, image_shape):
        return [(16, 16, image_shape[-1])] * 2 + [(8, 8, image_shape[-1])] * self.num_local

    def get_config(self):
        return {**super().get_config(), "num_local": self.num_local, "seed": self.seed}


def make_model(**kw):
    kw.setdefault("num_prototypes", 16)
    kw.setdefault("projection_dim", 32)
    kw.setdefault("hidden_dim", 16)
    kw.setdefault("freeze_prototypes_steps", 0)
    kw.setdefault("views", Crops(seed=10))
    return SwAV(small_encoder((None, None, 3)), input_shape=(16, 16, 3), seed=1, **kw)


def numpy_unit_columns(w):
    return w / np.linalg.norm(w, axis=0, keepdims=True)


def to_np(outputs):
    return {
        k: [ops.convert_to_numpy(t) for t in v] if isinstance(v, list) else ops.convert_to_numpy(v)
        for k, v in outputs.items()
    }


def test_scores_are_cosines_to_unit_prototypes_and_loss_is_swav():
    model = make_model()
    x = random_images(8)
    out = model(x, training=True)
    np_out = to_np(out)
    z1 = np_out["z1"]
    np.testing.assert_allclose(np.linalg.norm(z1, axis=1), 1.0, rtol=1e-5)
    kernel = numpy_unit_columns(np.array(model.prototypes.kernel))
    np.testing.assert_allclose(np_out["scores"][0], z1 @ kernel, atol=1e-5)
    scores = np_out["scores"]
    expected = numpy_swav(scores, (0, 1), temperature=0.1, epsilon=0.05, iterations=3)
    got = model.compute_loss(x, None, out, None, training=True)
    np.testing.assert_allclose(ops.convert_to_numpy(got), expected, rtol=1e-5)


def test_numpy_swav_references_on_hand_cases():
    # Sinkhorn, one iteration, exp(scores / eps) = [[1, 1], [2, 6]] (B x K), total 10:
    # [[.1, .1], [.2, .6]]. Prototype masses .3, .7 scaled to 1/K = 1/2:
    # [[1/6, 1/14], [1/3, 3/7]]. Sample masses 5/21, 16/21 scaled to 1/B, times B = 2:
    # rows [0.7, 0.3] and [7/16, 9/16].
    q = numpy_sinkhorn(0.05 * np.log([[1.0, 1.0], [2.0, 6.0]]), epsilon=0.05, iterations=1)
    np.testing.assert_allclose(q, [[0.7, 0.3], [7 / 16, 9 / 16]], rtol=1e-12)
    # One sample, two crops: equipartition makes the codes uniform, [1/2, 1/2], whatever
    # the scores. Crop 1 predicts crop 0's codes with softmax([0, 0]): ln 2; crop 0
    # predicts crop 1's with softmax([0, ln 3]) = [1/4, 3/4]: (ln 4 + ln 4/3) / 2.
    t = 0.1
    crops = [np.array([[0.0, 0.0]]), np.array([[0.0, t * np.log(3)]])]
    expected = (np.log(2) + 0.5 * np.log(16 / 3)) / 2
    np.testing.assert_allclose(numpy_swav(crops, (0, 1), temperature=t), expected, rtol=1e-12)
    # A queued row [1, 1] (after exp(./eps)) prepended to the sample's [1, 3]: one
    # iteration on [[1, 1], [1, 3]] gives the sample (last row) the codes [2/5, 3/5]
    # (the queue row's are [2/3, 1/3]). Predicted by softmax([0, ln 3]) = [1/4, 3/4]:
    # -(2/5 ln 1/4 + 3/5 ln 3/4) = ln 4 - (3/5) ln 3.
    crops = [0.05 * np.log([[1.0, 3.0]]), np.array([[0.0, t * np.log(3)]])]
    got = numpy_swav(crops, (0,), temperature=t, epsilon=0.05, iterations=1, queue_scores=[np.zeros((1, 2))])
    np.testing.assert_allclose(got, np.log(4) - 0.6 * np.log(3), rtol=1e-12)


def test_encoder_runs_once_per_resolution():
    model = make_model()
    model.build()  # its forward on blank images is not what we count
    shapes = []
    call = model.encoder.call

    def counting(inputs, *args, **kwargs):
        shapes.append(tuple(inputs.shape))
        return call(inputs, *args, **kwargs)

    model.encoder.call = counting
    model(random_images(8), training=True)
    assert shapes == [(16, 16, 16, 3), (16, 8, 8, 3)]


def test_prototypes_are_frozen_for_the_first_steps_then_updated():
    model = make_model(freeze_prototypes_steps=2)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    x = random_images(8)
    kernel0 = np.array(model.prototypes.kernel)
    projector0 = [np.array(w) for w in model.projector.get_weights()]
    for _ in range(2):
        model.fit(x, batch_size=8, epochs=1, verbose=0)
        np.testing.assert_array_equal(np.array(model.prototypes.kernel), kernel0)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(projector0, model.projector.get_weights()))
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    assert np.abs(np.array(model.prototypes.kernel) - kernel0).max() > 0


def queues_full(model):
    return all(bool(ops.convert_to_numpy(queue.is_full())) for queue in model.queues)


def test_queue_holds_past_embeddings_and_joins_sinkhorn_once_full():
    model = make_model(queue_size=16)
    x = random_images(8)
    # Queue state is read from the model before each step (not from the step's outputs);
    # the step's loss is `compute_loss`'s, which must use the state before the step.
    assert not queues_full(model)
    out = model(x, training=True)
    first = to_np(out)
    # Not full: the loss ignores the queue.
    scores = first["scores"]
    expected = numpy_swav(scores, (0, 1))
    np.testing.assert_allclose(ops.convert_to_numpy(model.compute_loss(x, None, out, None)), expected, rtol=1e-5)
    np.testing.assert_allclose(np.array(model.queues[0].queue)[:8], first["z1"], atol=1e-6)
    second = model(x, training=True)
    assert queues_full(model)
    # The queues as the third step reads them (before its enqueue), copied to NumPy.
    queues = [np.array(queue.queue) for queue in model.queues]
    out = model(x, training=True)
    third = to_np(out)
    # They hold the first two steps' embeddings; the queue scores use the current prototypes.
    kernel = numpy_unit_columns(np.array(model.prototypes.kernel))
    queue0 = np.concatenate([first["z1"], ops.convert_to_numpy(second["z1"])])
    np.testing.assert_allclose(queues[0] @ kernel, queue0 @ kernel, atol=1e-5)
    scores = third["scores"]
    queued = [queue @ kernel for queue in queues]
    expected = numpy_swav(scores, (0, 1), queue_scores=queued)
    assert not np.isclose(expected, numpy_swav(scores, (0, 1)))
    np.testing.assert_allclose(ops.convert_to_numpy(model.compute_loss(x, None, out, None)), expected, rtol=1e-5)


def test_evaluate_leaves_the_queue_alone():
    model = make_model(queue_size=16)
    model.compile(optimizer="sgd")
    model.evaluate(random_images(8), batch_size=8, verbose=0)
    assert int(model.queues[0].filled) == 0 and int(model.step) == 0


def test_whole_model_saves_queue_and_prototypes_and_continues(tmp_path):
    model = make_model(queue_size=16, freeze_prototypes_steps=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = random_images(16)
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "swav.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SwAV) and loaded.queue_size == 16
    assert loaded.prototypes.freeze_steps == 1
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.array(loaded.queues[1].queue), np.array(model.queues[1].queue))
    assert int(loaded.queues[0].filled) == 16 and int(loaded.step) == 2
    assert np.isfinite(loaded.fit(x, batch_size=8, epochs=1, verbose=0).history["loss"][0])
    assert int(loaded.step) == 4


def test_prototypes_layer():
    layer = Prototypes(5, freeze_steps=3)
    layer.build((None, 4))
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    expected = x @ numpy_unit_columns(np.array(layer.kernel))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x, step=0)), expected, atol=1e-5)
    assert Prototypes.from_config(layer.get_config()).freeze_steps == 3
    with pytest.raises(ValueError, match="num_prototypes"):
        Prototypes(0)
    with pytest.raises(ValueError, match="freeze_steps"):
        Prototypes(4, freeze_steps=-1)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"num_prototypes": 0}, "num_prototypes"),
        ({"sinkhorn_iterations": 0}, "sinkhorn_iterations"),
        ({"queue_size": -4}, "queue_size"),
        ({"freeze_prototypes_steps": 1.5}, "freeze_prototypes_steps"),
        ({"views": OneView(keras.layers.Identity())}, "needs 2 full-size views"),
    ],
)
def test_bad_options_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        make_model(**kw)
