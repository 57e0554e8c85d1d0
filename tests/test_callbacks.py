"""Online monitors: the values they log equal the evaluation functions run directly."""

import glob
import warnings

import keras
import numpy as np
import pytest
from conftest import random_images

import keras_ssl
from keras_ssl import callbacks as cb
from keras_ssl import evaluation as ev

SIZE = 8


class Wrapped(keras.Model):
    """The smallest model with an `encoder` attribute, like every keras_ssl method."""

    def __init__(self, encoder, classes=3):
        super().__init__()
        self.encoder = encoder
        self.head = keras.layers.Dense(classes)

    def call(self, x, training=False):
        return self.head(self.encoder(x, training=training))


def conv_encoder():
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )


def constant_encoder():
    """Features that do not depend on the image: complete collapse."""
    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer="ones", trainable=False),
        ]
    )


def labelled(n=24, seed=0):
    x = random_images(n, SIZE, seed=seed)
    return x, (x[:, 0, 0, 0] // 86).astype("int64")  # 3 classes from the base colour


def train(encoder, monitors, epochs=2):
    x, y = labelled(16, seed=5)
    model = Wrapped(encoder)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(x.astype("float32") / 255.0, y, batch_size=8, epochs=epochs, verbose=0, callbacks=monitors)
    return model, history.history


class Recorder(keras.callbacks.Callback):
    """Reads the epoch logs the way TensorBoard and CSVLogger do."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(dict(logs))


def test_knn_monitor_logs_what_knn_accuracy_computes():
    (x, y), (xg, yg) = labelled(12), labelled(20, seed=1)
    monitor, recorder = cb.KNNMonitor(x, y, xg, yg, k=5, temperature=0.2), Recorder()
    model, history = train(conv_encoder(), [monitor, recorder])
    assert len(history["knn_top1"]) == 2
    want = ev.knn_accuracy(
        ev.embed(model.encoder, xg), yg, ev.embed(model.encoder, x), y, k=5, temperature=0.2, num_classes=3
    )["top1"]
    assert history["knn_top1"][-1] == pytest.approx(want, abs=1e-12)
    assert [logs["knn_top1"] for logs in recorder.seen] == history["knn_top1"]


def test_tensorboard_placed_after_the_monitor_writes_it(tmp_path):
    pytest.importorskip("tensorboard")
    x, y = labelled(12)
    board = keras.callbacks.TensorBoard(str(tmp_path / "logs"))
    train(conv_encoder(), [cb.KNNMonitor(x, y, k=3), board], epochs=1)
    events = glob.glob(str(tmp_path / "logs" / "train" / "*tfevents*"))
    assert events and b"knn_top1" in open(events[0], "rb").read()


def test_alternate_split_takes_every_other_image_of_each_class():
    labels = np.array([0, 1, 0, 1, 0, 1, 2, 0])  # cycling labels: a plain x[::2] would see class 0 only
    seen, want = {}, []
    for label in labels:
        want.append(seen.get(label, 0) % 2 == 0)
        seen[label] = seen.get(label, 0) + 1
    np.testing.assert_array_equal(cb.alternate_split(labels), want)


def test_knn_monitor_splits_a_single_set_and_skips_epochs():
    x, _ = labelled(24)
    y = np.arange(24) % 2  # cycling labels
    monitor = cb.KNNMonitor(x, y, every=2, k=3, name="knn")
    model, history = train(conv_encoder(), [monitor], epochs=3)
    assert len(history["knn"]) == 2  # epochs 2 and 3 (the last); like validation_freq
    f, queries = ev.embed(model.encoder, x), (np.arange(24) // 2) % 2 == 0
    want = ev.knn_accuracy(f[~queries], y[~queries], f[queries], y[queries], k=3)["top1"]
    assert history["knn"][-1] == pytest.approx(want, abs=1e-12)


def test_linear_probe_monitor_logs_what_linear_probe_computes():
    (x, y), (xt, yt) = labelled(24), labelled(12, seed=2)
    monitor = cb.LinearProbeMonitor(x, y, xt, yt, epochs=3, batch_size=8, learning_rate=0.05)
    model, history = train(conv_encoder(), [monitor])
    want = ev.linear_probe(model.encoder, x, y, xt, yt, epochs=3, batch_size=8, learning_rate=0.05)
    assert len(history["linear_top1"]) == 2
    assert history["linear_top1"][-1] == want["top1"]


def test_collapse_monitor_warns_for_a_constant_encoder():
    x, _ = labelled(16)
    with pytest.warns(UserWarning, match="CollapseMonitor") as record:
        _, history = train(constant_encoder(), [cb.CollapseMonitor(x)])
    messages = [str(w.message) for w in record]
    assert sum("embedding_std" in m for m in messages) == 2 and sum("rankme" in m for m in messages) == 2
    assert history["embedding_std"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert history["rankme"] == pytest.approx([1.0, 1.0], abs=1e-3)


def test_collapse_monitor_logs_metrics_of_healthy_features_quietly():
    x, _ = labelled(24)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="CollapseMonitor")
        model, history = train(conv_encoder(), [cb.CollapseMonitor(x, rank_threshold=1.5)])
    f = ev.embed(model.encoder, x)
    assert history["embedding_std"][-1] == pytest.approx(ev.embedding_std(f), rel=1e-6)
    assert history["rankme"][-1] == pytest.approx(ev.rankme(f), rel=1e-6)
    # the default threshold scales with the feature dimension: 0.1 / sqrt(6) here
    same = np.full_like(x, 128)  # identical images: identical features
    with pytest.warns(UserWarning, match=r"embedding_std = \S+ fell below 0\.04082"):
        train(conv_encoder(), [cb.CollapseMonitor(same, rank_threshold=None)])


def test_monitors_need_an_encoder():
    x, y = labelled(8)
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="encoder"):
        model.fit(x / 255.0, y, epochs=1, verbose=0, callbacks=[cb.CollapseMonitor(x)])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x, y: cb.KNNMonitor(x, y[:4]), "labels"),
        (lambda x, y: cb.KNNMonitor(x, y, every=0), "every"),
        (lambda x, y: cb.KNNMonitor(x, y, k=0), "k >= 1"),
        (lambda x, y: cb.KNNMonitor(x, y, x_train=x), "neither"),
        (lambda x, y: cb.KNNMonitor(x[:1], y[:1]), "at least 2"),
        (lambda x, y: cb.LinearProbeMonitor(x, y.astype("float32")), "integer labels"),
        (lambda x, y: cb.LinearProbeMonitor(x, y, epochs=0), "epochs"),
        (lambda x, y: cb.CollapseMonitor(x[0]), "rank 4"),
    ],
)
def test_monitors_reject_bad_arguments(make, match):
    x, y = labelled(8)
    with pytest.raises(ValueError, match=match):
        make(x, y)


def test_configs_round_trip():
    x, y = labelled(8)
    for monitor in (
        cb.KNNMonitor(x, y, every=3, k=7, name="knn"),
        cb.LinearProbeMonitor(x, y, epochs=2, seed=4),
        cb.CollapseMonitor(x, std_threshold=0.01),
    ):
        copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(monitor))
        assert type(copy) is type(monitor)
        config, original = copy.get_config(), monitor.get_config()
        assert config.keys() == original.keys()
        for key, value in original.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(config[key], value)
            else:
                assert config[key] == value, key


def test_tensorboard_logs_every_loss_term_of_a_method(tmp_path):
    pytest.importorskip("tensorboard")
    tf = pytest.importorskip("tensorflow")  # tf.summary writes the events on every backend
    model = keras_ssl.VICReg(conv_encoder(), projection_dim=16, seed=0)
    model.compile(optimizer="adam")
    board = keras.callbacks.TensorBoard(str(tmp_path / "logs"))
    history = model.fit(labelled(16)[0], batch_size=8, epochs=2, verbose=0, callbacks=[board]).history
    logged = {}
    for path in glob.glob(str(tmp_path / "logs" / "train" / "*tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                logged.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
    assert set(model.loss_terms) <= set(history)
    for name in ("loss",) + tuple(model.loss_terms):
        np.testing.assert_allclose(logged[f"epoch_{name}"], history[name], rtol=1e-6)
