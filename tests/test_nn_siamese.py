"""NNBYOL and NNSiam: two steps replayed in NumPy (neighbours, loss, support-set enqueue), gradients."""

import inspect

import keras
import numpy as np
import numpy_refs_siamese as ref
import pytest
from conftest import grads, small_encoder

from keras_ssl.methods.nn_siamese import NNBYOL, NNSiam
from keras_ssl.views import byol_views

# The reference loss and the forward output each method's support set is built from (solo-learn).
REFERENCES = {NNBYOL: (ref.nn_byol_loss, "t1", "t2"), NNSiam: (ref.nn_siam_loss, "z1", "z2")}


def make_model(cls, **kw):
    kw.setdefault("queue_size", 12)
    # NNSiam: a predictor bottleneck of 2 lets a sample have all its ReLUs dead, so p = 0.
    kw.update(projection_dim=8, hidden_dim=16) if cls is NNBYOL else kw.update(projection_dim=32, prediction_dim=16)
    return cls(small_encoder(), seed=1, **kw)


def numpy(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def test_references_on_hand_built_cases():
    support = np.eye(3)
    z = np.array([[0.1, 5.0, 0.0], [-1.0, 0.0, 0.2]])
    np.testing.assert_array_equal(ref.nearest_neighbour(z, support), np.eye(3)[[1, 2]])
    queue, pointer = ref.enqueue(np.zeros((3, 2)), 2, np.array([[3.0, 4.0], [0.0, -2.0]]))
    np.testing.assert_array_equal(queue, [[0.0, -1.0], [0.0, 0.0], [0.6, 0.8]])
    assert pointer == 1
    # p1 along NN(t2), p2 opposite NN(t1): BYOL 0 + 4, SimSiam's half sum (-1 + 1) / 2.
    p, nn = np.array([[1.0, 1.0]]), np.array([[2.0, 2.0]])
    assert ref.nn_byol_loss(p, -p, nn, nn)[0] == pytest.approx(4.0)
    assert ref.nn_siam_loss(p, -p, nn, nn)[0] == pytest.approx(0.0)


@pytest.mark.parametrize("cls", [NNBYOL, NNSiam], ids=lambda c: c.__name__)
def test_two_steps_replayed_in_numpy(cls):
    model = make_model(cls)
    reference, first, second = REFERENCES[cls]
    queue, pointer = numpy(model.support.queue), 0
    rng = np.random.default_rng(0)
    for step in range(2):  # 8 rows a step into 12: the second step wraps around
        views = [keras.ops.convert_to_tensor(rng.uniform(size=(8, 16, 16, 3)).astype("float32")) for _ in range(2)]
        out = model.ssl_forward(views, training=True)
        nn1, nn2 = ref.nearest_neighbour(numpy(out[first]), queue), ref.nearest_neighbour(numpy(out[second]), queue)
        np.testing.assert_allclose(numpy(out["nn1"]), nn1, atol=1e-6)
        np.testing.assert_allclose(numpy(out["nn2"]), nn2, atol=1e-6)
        expected, _ = reference(numpy(out["p1"]), numpy(out["p2"]), nn1, nn2)
        np.testing.assert_allclose(numpy(model.compute_ssl_loss(out)[0]), expected, rtol=1e-5, atol=1e-6)
        model.update_state(out)
        queue, pointer = ref.enqueue(queue, pointer, numpy(out[first]))
        np.testing.assert_allclose(numpy(model.support.queue), queue, atol=1e-6)
        assert int(model.support.pointer) == pointer and int(model.support.filled) == min(12, 8 * (step + 1))


@pytest.mark.parametrize("cls", [NNBYOL, NNSiam], ids=lambda c: c.__name__)
def test_gradients_reach_the_predictions_only(cls):
    model = make_model(cls)
    reference = REFERENCES[cls][0]
    rng = np.random.default_rng(1)
    p1, p2, nn1, nn2 = rng.normal(size=(4, 6, model.projection_dim)).astype("float32")

    def loss(p1, p2, nn1, nn2):
        return model.compute_ssl_loss({"p1": p1, "p2": p2, "nn1": nn1, "nn2": nn2})[0]

    expected, expected_grads = reference(p1, p2, nn1, nn2)
    np.testing.assert_allclose(numpy(loss(p1, p2, nn1, nn2)), expected, rtol=1e-5)
    got = grads(loss, p1, p2, nn1, nn2)
    for g, e in zip(got[:2], expected_grads):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
    for g in got[2:]:
        np.testing.assert_array_equal(g, np.zeros_like(g))


def test_defaults_and_bad_options():
    for cls in (NNBYOL, NNSiam):
        assert inspect.signature(cls).parameters["queue_size"].default == 4096
        with pytest.raises(ValueError, match="queue_size"):
            cls(small_encoder(), queue_size=1)
    assert inspect.signature(NNBYOL).parameters["momentum"].default == 0.996
    assert NNSiam.view_recipe is byol_views  # solo-learn's asymmetric views
