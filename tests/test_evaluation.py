"""Evaluation protocols (kNN, linear probe, fine-tuning) and representation metrics."""

import math

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder

from keras_ssl import backbones
from keras_ssl import evaluation as ev

# ------------------------------------------------------------------ kNN
TRAIN = np.array([[1, 0], [0, 1], [1, 1], [-1, 1], [0, -1], [2, -2]], "float32")
TRAIN_LABELS = np.array([0, 1, 0, 1, 1, 1])


def test_knn_scores_match_hand_computation():
    # cos sims of [3, 0]: 1 (c0), 0, .707 (c0), -.707, 0, .707 (c1) -> top 3: rows 0, 2, 5
    # cos sims of [0, 5]: 0, 1 (c1), .707 (c0), .707 (c1), -1, -.707 -> top 3: rows 1, 2, 3
    test = np.array([[3, 0], [0, 5]], "float32")
    scores = ev.knn_classify(TRAIN, TRAIN_LABELS, test, k=3, temperature=0.5)
    e2, er2 = math.exp(1 / 0.5), math.exp(math.sqrt(0.5) / 0.5)
    np.testing.assert_allclose(scores, [[e2 + er2, er2], [er2, e2 + er2]], rtol=1e-5)


def brute_force_knn(train, labels, test, k, t, classes):
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    out = np.zeros((len(test), classes))
    for i, row in enumerate(b @ a.T):
        for j in np.argsort(-row)[:k]:
            out[i, labels[j]] += np.exp(row[j] / t)
    return out


def test_knn_matches_brute_force_and_chunking():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(50, 8)), rng.normal(size=(13, 8))
    labels = rng.integers(0, 4, 50)
    want = brute_force_knn(train, labels, test, 7, 0.2, 5)
    got = ev.knn_classify(train, labels, test, k=7, temperature=0.2, num_classes=5, batch_size=4)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_k_larger_than_train_set_is_clipped():
    test = np.array([[3, 1]], "float32")
    np.testing.assert_allclose(
        ev.knn_classify(TRAIN, TRAIN_LABELS, test, k=1000),
        ev.knn_classify(TRAIN, TRAIN_LABELS, test, k=6),
    )


def test_top5_counts_the_true_class_among_the_five_best():
    # One training point per class along an axis; the test point's similarity
    # to class c decreases with c, so the class ranking is 0, 1, 2, ...
    train = np.eye(10)
    test = np.tile(np.linspace(1.0, 0.1, 10), (3, 1))
    acc = ev.knn_accuracy(train, np.arange(10), test, np.array([0, 3, 7]), k=10)
    assert acc == {"top1": pytest.approx(1 / 3), "top5": pytest.approx(2 / 3)}


def test_knn_separates_two_gaussian_clusters():
    rng = np.random.default_rng(1)
    centre = np.full(8, 2.0)
    train = np.concatenate([rng.normal(size=(40, 8)) + centre, rng.normal(size=(40, 8)) - centre])
    test = np.concatenate([rng.normal(size=(20, 8)) + centre, rng.normal(size=(20, 8)) - centre])
    labels = np.repeat([0, 1], 40)
    acc = ev.knn_accuracy(train, labels, test, np.repeat([0, 1], 20), k=20, top=(1,))
    assert acc["top1"] >= 0.95


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k must"),
        ({"temperature": 0.0}, "temperature"),
        ({"train_labels": TRAIN_LABELS[:5]}, "labels"),
        ({"test_features": np.ones((2, 3))}, "dimension"),
        ({"train_labels": TRAIN_LABELS - 1}, "non-negative"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_knn_rejects_bad_arguments(kwargs, match):
    args = {"train_features": TRAIN, "train_labels": TRAIN_LABELS, "test_features": TRAIN[:2]}
    with pytest.raises(ValueError, match=match):
        ev.knn_classify(**{**args, **kwargs})


def test_nearest_neighbors_are_sorted():
    sims, idx = ev.nearest_neighbors(np.array([[3.0, 0.0]]), TRAIN, k=4)
    np.testing.assert_array_equal(idx[0, :1], [0])
    assert set(idx[0, 1:3]) == {2, 5} and idx[0, 3] in (1, 4)
    np.testing.assert_allclose(sims[0], [1, math.sqrt(0.5), math.sqrt(0.5), 0], atol=1e-7)


# ------------------------------------------------------------------ embed
def flatten_encoder(shape):
    return keras.Sequential([keras.Input(shape), keras.layers.Flatten()])


def test_embed_converts_uint8_and_batches():
    x = random_images(10, size=2, channels=1)
    want = x.reshape(10, -1) / 255.0
    np.testing.assert_allclose(ev.embed(flatten_encoder((2, 2, 1)), x, batch_size=3), want, atol=1e-6)
    # a bare layer (not a Model) goes through the call path
    np.testing.assert_allclose(ev.embed(keras.layers.Flatten(), x, batch_size=3), want, atol=1e-6)


def test_embed_pools_rank4_outputs_and_uses_value_range():
    x = np.arange(2 * 4 * 4 * 2).reshape(2, 4, 4, 2).astype("int64")
    encoder = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Identity()])
    got = ev.embed(encoder, x, value_range=(0, 100))
    np.testing.assert_allclose(got, x.mean(axis=(1, 2)) / 100.0, atol=1e-6)
    assert got.dtype == np.float32
    with pytest.raises(ValueError, match="value_range"):
        ev.embed(encoder, x)


# ------------------------------------------------------------------ linear probe
def test_linear_probe_learns_separable_features():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 96)
    # class shifts half the pixels up, half down: separable, not by the mean
    pattern = np.where(np.arange(16) % 2, 1.0, -1.0).reshape(4, 4, 1)
    x = np.clip(
        0.5 + 0.15 * (2 * y - 1)[:, None, None, None] * pattern + rng.normal(0, 0.08, (96, 4, 4, 1)), 0, 1
    ).astype("float32")
    result = ev.linear_probe(
        flatten_encoder((4, 4, 1)), x[:64], y[:64], x[64:], y[64:], epochs=15, batch_size=16, learning_rate=1e-2
    )
    assert result["top1"] > 0.9 and result["train_top1"] > 0.9


# ------------------------------------------------------------------ fine-tuning
def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def test_fine_tune_leaves_the_original_encoder_untouched():
    encoder = small_encoder((16, 16, 3), width=4)
    before = weights_of(encoder)
    x, y = random_images(24), np.arange(24) % 3
    result, model = ev.fine_tune(encoder, x[:16], y[:16], x[16:], y[16:], epochs=1, batch_size=8, return_model=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, weights_of(encoder)))
    assert 0 <= result["top1"] <= 1 and result["num_labeled"] == 16
    copy = [layer for layer in model.layers if isinstance(layer, keras.Model)][0]
    assert not np.array_equal(copy.layers[0].get_weights()[0], before[0])  # it did train


def test_zero_encoder_rate_freezes_the_encoder_weights():
    encoder = small_encoder((16, 16, 3), width=4)
    x, y = random_images(16), np.arange(16) % 2
    _, model = ev.fine_tune(
        encoder, x, y, x, y, epochs=1, batch_size=8, augment=False, encoder_learning_rate_scale=0.0, return_model=True
    )
    copy = [layer for layer in model.layers if isinstance(layer, keras.Model)][0]
    for a, b in zip(encoder.trainable_weights, copy.trainable_weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    head = model.layers[-1].kernel
    initial = keras.initializers.GlorotUniform(1)(head.shape)  # fine_tune's head init, seed 0 + 1
    assert not np.allclose(np.array(head), np.array(initial))


def test_gradient_scale_scales_the_sgd_step_upstream():
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")

    def step(scale):
        inputs = keras.Input((3,))
        dense = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
        model = keras.Model(inputs, ev.GradientScale(scale)(dense(inputs)))
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        return np.array(dense.kernel) - 1.0

    np.testing.assert_allclose(step(0.25), 0.25 * step(1.0), rtol=1e-5)
    assert np.all(step(1.0) != 0)
    layer = ev.GradientScale.from_config(ev.GradientScale(0.3).get_config())
    assert layer.scale == 0.3
    np.testing.assert_allclose(np.array(layer(np.array([2.0, -1.0]))), [2.0, -1.0])


def test_labeled_subset_is_class_balanced():
    labels = np.repeat([0, 1, 2], [100, 50, 10])
    idx = ev.labeled_subset(labels, 0.1, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [10, 5, 1])
    np.testing.assert_array_equal(np.bincount(labels[ev.labeled_subset(labels, 0.01)]), [1, 1, 1])
    np.testing.assert_array_equal(idx, ev.labeled_subset(labels, 0.1, seed=0))
    assert not np.array_equal(idx, ev.labeled_subset(labels, 0.1, seed=1))
    assert len(np.unique(idx)) == len(idx)
    assert len(ev.labeled_subset(labels, 1.0)) == 160
    with pytest.raises(ValueError, match="label_fraction"):
        ev.labeled_subset(labels, 0.0)


def test_fine_tune_uses_the_label_fraction():
    x, y = random_images(40), np.repeat([0, 1], 20)
    result = ev.fine_tune(small_encoder(width=4), x, y, x[:8], y[:8], epochs=1, batch_size=8, label_fraction=0.1)
    assert result["num_labeled"] == 4
    results = ev.semi_supervised(
        small_encoder(width=4), x, y, x[:8], y[:8], fractions=(0.05, 0.25), epochs=1, batch_size=8
    )
    assert {f: r["num_labeled"] for f, r in results.items()} == {0.05: 2, 0.25: 10}
    with pytest.raises(TypeError, match="label_fraction"):
        ev.semi_supervised(small_encoder(width=4), x, y, x, y, label_fraction=0.5)


# ------------------------------------------------------------------ metrics
def test_rankme():
    rng = np.random.default_rng(0)
    assert ev.rankme(np.tile(rng.normal(size=(1, 16)), (100, 1))) == pytest.approx(1, abs=1e-3)
    rank1 = np.outer(rng.normal(size=50), rng.normal(size=16))
    assert ev.rankme(rank1) == pytest.approx(1, abs=1e-3)
    assert 14 < ev.rankme(rng.normal(size=(2000, 16))) <= 16
    # singular values 3 and 1: p = (.75, .25)
    want = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert ev.rankme(np.diag([3.0, 1.0])) == pytest.approx(want, rel=1e-5)


def test_embedding_std():
    rng = np.random.default_rng(0)
    assert ev.embedding_std(np.tile(rng.normal(size=(1, 16)), (50, 1))) == pytest.approx(0, abs=1e-7)
    assert ev.embedding_std(rng.normal(size=(2000, 16))) == pytest.approx(0.25, abs=0.01)


def test_alignment():
    z = np.random.default_rng(0).normal(size=(20, 8))
    assert ev.alignment(z, 3 * z) == pytest.approx(0, abs=1e-12)
    assert ev.alignment([[2.0, 0.0]], [[0.0, 5.0]]) == pytest.approx(2.0)
    assert ev.alignment([[2.0, 0.0]], [[0.0, 5.0]], alpha=1) == pytest.approx(math.sqrt(2))
    with pytest.raises(ValueError, match="same shape"):
        ev.alignment(z, z[:5])


def test_uniformity():
    rng = np.random.default_rng(0)
    assert ev.uniformity(np.ones((10, 4))) == pytest.approx(0, abs=1e-9)
    assert ev.uniformity([[1.0, 0.0], [-3.0, 0.0]]) == pytest.approx(-8.0)
    z = rng.normal(size=(7, 3))
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    pairs = [np.exp(-2 * np.sum((u[i] - u[j]) ** 2)) for i in range(7) for j in range(i + 1, 7)]
    assert ev.uniformity(z, batch_size=2) == pytest.approx(np.log(np.mean(pairs)))
    assert ev.uniformity(rng.normal(size=(200, 16))) < -3
    with pytest.raises(ValueError, match="at least 2"):
        ev.uniformity(np.ones((1, 4)))


def test_linear_probe_is_reproducible_and_returns_the_classifier():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(40, 2, 2, 1)).astype("float32"), rng.integers(0, 3, 40)
    encoder = flatten_encoder((2, 2, 1))

    def probe(seed):
        return ev.linear_probe(
            encoder, x[:32], y[:32], x[32:], y[32:], epochs=3, batch_size=8, seed=seed, return_model=True
        )

    (r1, m1), (r2, m2), (_, m3) = probe(0), probe(0), probe(1)
    np.testing.assert_array_equal(np.array(m1.layers[-1].kernel), np.array(m2.layers[-1].kernel))
    assert r1 == r2
    assert not np.allclose(np.array(m1.layers[-1].kernel), np.array(m3.layers[-1].kernel))
    # the classifier takes raw features: the standardisation is inside it
    logits = m1.predict(x[32:].reshape(8, 4), verbose=0)
    assert r1["top1"] == np.mean(logits.argmax(axis=1) == y[32:])
    with pytest.raises(ValueError, match="epochs"):
        ev.linear_probe(encoder, x, y, x, y, epochs=0)


def test_fine_tune_layer_decay_slows_the_lower_blocks():
    encoder = backbones.vit(image_size=16, patch_size=4, dim=8, depth=2, heads=2)
    x, y = random_images(16), np.arange(16) % 2

    def moved(**options):
        _, model = ev.fine_tune(
            encoder, x, y, x, y, epochs=2, batch_size=8, augment=False, return_model=True, **options
        )
        copy = [layer for layer in model.layers if isinstance(layer, keras.Model)][0]
        return {
            name: np.abs(np.array(copy.get_layer(name).weights[0]) - np.array(encoder.get_layer(name).weights[0])).max()
            for name in ("patch_embed", "block_0", "block_1")
        }

    plain, decayed = moved(), moved(layer_decay=0.01)
    # 0.01 ** 3 for the patch embedding, 0.01 ** 2 for block 0, 0.01 for block 1 (the last block)
    assert plain["patch_embed"] > 0 and decayed["patch_embed"] < 1e-4 * plain["patch_embed"]
    assert decayed["block_0"] < 0.05 * plain["block_0"] and 0 < decayed["block_1"] < 0.5 * plain["block_1"]
    with pytest.raises(ValueError, match="layer_decay needs a keras_ssl ViT"):
        ev.fine_tune(small_encoder(width=4), x, y, x, y, layer_decay=0.75)
