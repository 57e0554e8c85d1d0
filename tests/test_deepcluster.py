"""DeepCluster-v2: loss and k-means vs the official code in NumPy, bank and clusters, indices, resume."""

import keras
import numpy as np
import pytest
from conftest import grads, random_images, small_encoder
from numpy_refs_deepcluster import bank_update, deepcluster_loss, kmeans_official, normalize

from keras_ssl.engine.fit import check_fit_data
from keras_ssl.layers.cluster_memory import ClusterMemory
from keras_ssl.losses.deepcluster import deepcluster_v2, spherical_kmeans
from keras_ssl.methods.deepcluster import DeepClusterV2
from keras_ssl.views.multi_crop import multi_crop_views


def make(num_samples=16, **kw):
    return DeepClusterV2(
        small_encoder((None, None, 3)),
        input_shape=(16, 16, 3),
        num_samples=num_samples,
        num_prototypes=(8, 8, 8),
        projection_dim=8,
        hidden_dim=16,
        views=multi_crop_views(16, local_size=8, num_local=2, seed=3),
        seed=1,
        **kw,
    )


MAKERS = {"deepclusterv2": make}


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_reference_loss_by_hand():
    # One head, two crops, T = 1: three rows score log(1 + e^-1), one log 2 (mean of four).
    scores = [[np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.5, 0.5], [0.0, 1.0]])]]
    expected = (3 * np.log1p(np.exp(-1.0)) + np.log(2.0)) / 4
    np.testing.assert_allclose(deepcluster_loss(scores, [[0, 1]], 1.0)[0], expected, rtol=1e-12)
    np.testing.assert_allclose(float(deepcluster_v2(scores, np.array([[0, 1]]), 1.0)), expected, rtol=1e-6)


def test_loss_and_gradient_match_the_official_cross_entropy():
    rng = np.random.default_rng(0)
    shapes = [(6, 5), (6, 7)]  # two heads of 5 and 7 clusters, three crops each
    scores = [[rng.uniform(-1, 1, size=s).astype("float32") for _ in range(3)] for s in shapes]
    assignments = np.stack([rng.integers(0, 5, 6), rng.integers(0, 7, 6)]).astype("int32")
    assignments[0, 2] = assignments[1, 4] = -1  # samples without a cluster are left out
    expected, expected_grads = deepcluster_loss(scores, assignments, 0.1)
    flat = [s for crops in scores for s in crops]

    def fn(*xs):
        return deepcluster_v2([list(xs[:3]), list(xs[3:])], assignments, 0.1)

    np.testing.assert_allclose(float(fn(*flat)), expected, rtol=1e-5)
    for got, want in zip(grads(fn, *flat), [g for head in expected_grads for g in head]):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert float(deepcluster_v2(scores, -np.ones((2, 6), "int32"))) == 0.0
    with pytest.raises(ValueError, match="temperature"):
        deepcluster_v2(scores, assignments, 0.0)


def test_kmeans_matches_the_official_loop_with_an_empty_cluster():
    rng = np.random.default_rng(1)
    bank = normalize(np.abs(rng.normal(size=(40, 6)))).astype("float32")  # one orthant
    start = np.concatenate([bank[[3, 10, 17, 25]], -bank[:1]])  # the last never wins: an empty cluster
    want_c, want_a = kmeans_official(bank, start, 10)
    got_c, got_a = spherical_kmeans(bank, start, 10)
    np.testing.assert_array_equal(numpy(got_a), want_a)
    np.testing.assert_allclose(numpy(got_c), want_c, atol=1e-5)
    assert 4 not in want_a and np.allclose(want_c[4], -bank[0])  # the empty cluster kept its centroid
    assert len(set(want_a)) == 4
    np.testing.assert_array_equal(numpy(spherical_kmeans(bank, start, 0)[1]), (bank @ start.T).argmax(axis=1))


def test_bank_and_clusters_over_two_epochs_replayed_in_numpy(monkeypatch):
    model = make(num_samples=12)
    rng = np.random.default_rng(2)
    bank = numpy(model.memory.bank).astype("float64")
    np.testing.assert_allclose(np.linalg.norm(bank, axis=-1), 1.0, atol=1e-5)
    assert (numpy(model.memory.assignments) == -1).all()
    drawn = []
    original = ClusterMemory.init_rows
    monkeypatch.setattr(ClusterMemory, "init_rows", lambda self, k: drawn.append(numpy(original(self, k))) or drawn[-1])
    for epoch in range(2):
        model.begin_epoch(epoch)
        if epoch == 0:  # nothing to cluster before an epoch has filled the bank
            assert not drawn and (numpy(model.memory.assignments) == -1).all()
        else:
            assert len(drawn) == 3 and all(len(set(r)) == 8 for r in drawn)
            for h, rows in enumerate(drawn):
                want_c, want_a = kmeans_official(bank[h % 2], bank[h % 2][rows], 10)
                np.testing.assert_array_equal(numpy(model.memory.assignments)[h], want_a)
                np.testing.assert_allclose(numpy(model.memory.centroids[h]), want_c, atol=1e-5)
        model.begin_epoch(epoch)  # a run resumed mid-epoch does not cluster again
        assert len(drawn) == 3 * epoch
        for indices in np.split(rng.permutation(12), 3):
            z1, z2 = (normalize(rng.normal(size=(4, 8))).astype("float32") for _ in range(2))
            outputs = {"z1": z1, "z2": z2, "indices": indices.astype("int32")}
            model.update_state({k: keras.ops.convert_to_tensor(v) for k, v in outputs.items()})
            bank = bank_update(bank, indices, z1, z2)
            np.testing.assert_allclose(numpy(model.memory.bank), bank, atol=1e-6)
        model.end_epoch(epoch)
    # The loss reads each sample's clusters of this epoch.
    indices = np.array([5, 0, 7, 3], "int32")
    scores = [[rng.uniform(-1, 1, (4, 8)).astype("float32") for _ in range(4)] for _ in range(3)]
    loss, _ = model.compute_ssl_loss({"scores": scores, "indices": indices})
    want, _ = deepcluster_loss(scores, numpy(model.memory.assignments)[:, indices], 0.1)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_sources_without_indices_fail_before_any_step():
    model = make()
    model.compile(optimizer="adam")
    x = random_images(16)
    images, indices = check_fit_data(model, x, None, 8)[0]  # arrays: each image's row is its index
    np.testing.assert_array_equal(indices, np.arange(16))
    bad = {
        "no second element": [x[:8], x[8:]],
        "dtype float32": [(x[:8], np.zeros(8, "float32"))],
        r"range over \[16, 23\]": [(x[:8], np.arange(16, 24))],
    }
    for problem, batches in bad.items():
        with pytest.raises(ValueError, match=f"keeps state per sample.*{problem}"):
            check_fit_data(model, batches, None, None)
    with pytest.raises(ValueError, match="keeps state per sample"):
        model.fit(bad["no second element"], epochs=1, verbose=0)
    assert int(model.step) == 0
    good = [(x[:8], np.arange(8)), (x[8:], np.arange(8, 16))]
    source = check_fit_data(model, good, None, None)[0]
    ((got_images, got_indices),) = source[1]
    np.testing.assert_array_equal(got_indices, np.arange(8, 16))


def test_memory_pass_fills_the_bank_with_each_global_crop_alone_in_training_mode():
    # main_deepclusterv2.py init_memory: before training, each assignment crop goes through the
    # model alone (its own BatchNorm batch), without gradient, into its sample's memory row.
    model = make(num_samples=16)
    x = random_images(16)
    flip = lambda v: keras.ops.flip(v, axis=2)
    half = lambda v: keras.ops.image.resize(v, (8, 8))
    # Fixed crops: one batch of all 16 images, so its batch statistics do not depend on the order.
    # object.__setattr__: a plain function where the view maker layer was (torch's Module refuses one).
    object.__setattr__(model, "views", lambda images, training=True: [images, flip(images), half(images), half(images)])
    weights = [numpy(w) for w in model.trainable_weights]
    model.fill_memory(x, batch_size=16)
    units = x.astype("float32") / 255.0
    for j, view in enumerate((units, numpy(flip(units)))):
        h = model.encoder(view, training=True)
        z = numpy(model.projector(keras.ops.reshape(h, (16, -1)), training=True)).astype("float64")
        np.testing.assert_allclose(numpy(model.memory.bank)[j], normalize(z), atol=1e-5)
    for before, after in zip(weights, model.trainable_weights):
        np.testing.assert_array_equal(numpy(after), before)  # no update
    assert int(model.step) == 0 and int(model.memory.filled) == 1  # the first epoch clusters it


def test_memory_pass_refuses_a_one_shot_source_and_can_be_left_to_the_first_epoch():
    x = random_images(16)
    model = make()
    model.compile(optimizer="adam")
    batches = ((x[i : i + 8], np.arange(i, i + 8)) for i in (0, 8))
    with pytest.raises(ValueError, match="read once.*memory_pass=False"):
        model.fit(batches, epochs=1, verbose=0)
    assert int(model.step) == 0
    model = make(memory_pass=False)  # solo-learn's way: the first epoch fills the bank
    model.compile(optimizer="adam")
    history = model.fit(x, epochs=2, batch_size=8, verbose=0)
    assert history.history["loss"][0] == 0.0 and history.history["loss"][1] > 0


def test_cluster_memory_refuses_bad_settings_and_rebuilds_from_its_config():
    with pytest.raises(ValueError, match=r"num_prototypes.*num_samples=4.*\(5,\)"):
        ClusterMemory(num_samples=4, dim=2, num_clusters=5)
    with pytest.raises(ValueError, match="kmeans_iterations"):
        ClusterMemory(num_samples=4, dim=2, num_clusters=2, iterations=0)
    memory = ClusterMemory(num_samples=5, dim=3, num_clusters=(2, 3), num_views=1, iterations=4, seed=7)
    again = ClusterMemory.from_config(memory.get_config())
    assert (again.num_clusters, again.num_views, again.iterations) == ((2, 3), 1, 4)
    np.testing.assert_array_equal(numpy(again.bank), numpy(memory.bank))  # same seed, same random rows
    assert numpy(memory.bank).shape == (1, 5, 3) and (numpy(memory.clusters(np.array([1, 4]))) == -1).all()
