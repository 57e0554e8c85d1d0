"""Online monitors users add to `fit`: kNN accuracy, a linear probe and collapse statistics
of the encoder, computed every few epochs on held-out images.

Each value goes into the epoch's logs with its 1-based epoch beside it, `knn_top1` and
`knn_top1_epoch`, so `History` (and a run's history.json) say when each was measured.
"""

import warnings

import keras
import numpy as np

from keras_ssl import data, evaluation
from keras_ssl.engine.contract import encoder_to_evaluate


class _EncoderMonitor(keras.callbacks.Callback):
    """Shared parts of the monitors: the schedule, the encoder, the config."""

    def __init__(self, every, batch_size, value_range):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be a positive number of epochs, got {every}.")
        self.every, self.batch_size, self.value_range = int(every), int(batch_size), value_range

    def _due(self, epoch):
        """Every `every` epochs, and at the last epoch of `fit`."""
        return (epoch + 1) % self.every == 0 or epoch + 1 == self.params.get("epochs")

    @staticmethod
    def _log(logs, epoch, values):
        """Writes `values` into the logs, each with its 1-based epoch as `"<name>_epoch"`.

        A metric measured every few epochs has fewer entries than the loss in
        `History`; its `_epoch` list says where each one belongs (`plots.plot_history`).
        """
        for name, value in values.items():
            logs[name], logs[name + "_epoch"] = value, epoch + 1

    def _encoder(self):
        encoder = encoder_to_evaluate(self.model)
        if encoder is None:
            raise ValueError(
                f"{type(self).__name__} reads `model.encoder`, but {type(self.model).__name__} "
                "has no `encoder` attribute."
            )
        return encoder

    def _embed(self, x):
        return evaluation.embed(self._encoder(), x, self.batch_size, self.value_range)

    def get_config(self):
        return {"every": self.every, "batch_size": self.batch_size, "value_range": self.value_range}

    @classmethod
    def from_config(cls, config):
        # the image and label arrays come back serialized ("__numpy__" dicts)
        return cls(
            **{
                key: keras.saving.deserialize_keras_object(value) if isinstance(value, dict) else value
                for key, value in config.items()
            }
        )


def _labelled(x, y, value_range, what):
    """Checks a labelled image set; returns it as arrays."""
    data.check_images(x, value_range=value_range)
    y = np.asarray(y).reshape(-1)
    if len(y) != len(x) or y.dtype.kind not in "ui":
        raise ValueError(f"{what}: expected {len(x)} integer labels, got {len(y)} of dtype {y.dtype}.")
    return np.asarray(x), y


def _pair(x, y, x_second, y_second, value_range):
    """`(x, y), (x_second, y_second)` checked; without a second set, `x` split by `alternate_split`."""
    x, y = _labelled(x, y, value_range, "x, y")
    if (x_second is None) != (y_second is None):
        raise ValueError("pass both the second set's images and its labels, or neither.")
    if x_second is None:
        first = alternate_split(y)
        if first.all():
            raise ValueError("need at least 2 labelled images of one class to split x, y.")
        return (x[first], y[first]), (x[~first], y[~first])
    return (x, y), _labelled(x_second, y_second, value_range, "second set")


def alternate_split(labels):
    """Boolean mask of the 1st, 3rd, 5th... image of each class (in order); the rest is its complement.

    How the monitors split one labelled set in two: deterministic, class-balanced,
    and immune to labels that cycle through the classes.

    Args:
        labels: `(N,)` integer labels.

    Returns:
        `(N,)` bool array.

    Example:
        >>> from keras_ssl.monitors import alternate_split
        >>> alternate_split(np.array([0, 1, 0, 1, 1]))
        array([ True,  True, False, False,  True])
    """
    labels = np.asarray(labels).reshape(-1)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    rank = np.arange(len(labels)) - np.repeat(starts, np.diff(np.r_[starts, len(labels)]))
    first = np.empty(len(labels), bool)
    first[order] = rank % 2 == 0
    return first


@keras.saving.register_keras_serializable(package="keras_ssl")
class KNNMonitor(_EncoderMonitor):
    """Weighted kNN accuracy of the evaluated encoder's features (`model.feature_encoder`) during `fit`.

    Every `every` epochs (and at the last one) the encoder embeds a labelled
    gallery and labelled queries in inference mode, and the top-1 accuracy
    of `evaluation.knn_accuracy` is written into the epoch's logs as `name`,
    so it lands in `History` and in a `TensorBoard` callback placed after
    this one, with the epoch (1-based) as `name + "_epoch"`. Like Keras's
    `validation_freq`, epochs not evaluated have no entry; the `_epoch` list
    says which were. This is the lightly protocol (k=200, T=0.1).

    Args:
        x, y: labelled query images (`uint8`, or float in [0, 1]) and labels.
        x_train, y_train: labelled gallery; when omitted, `x`, `y` are split
            by `alternate_split`: the 1st, 3rd... image of each class are
            the queries, the 2nd, 4th... the gallery.
        every: epochs between evaluations.
        k, temperature: of the weighted kNN.
        name: the key in the logs.
        batch_size: images per encoder forward pass.
        value_range: pixel range of the images (see `data.check_images`).

    Example:
        >>> from keras_ssl.monitors import KNNMonitor
        >>> model = keras_ssl.SimCLR(encoder)
        >>> model.compile(optimizer="adam")
        >>> monitor = KNNMonitor(x_test, y_test, x_train, y_train, every=2)
        >>> history = model.fit(x_train, epochs=3, batch_size=32, callbacks=[monitor], verbose=0)
        >>> len(history.history["loss"]), history.history["knn_top1_epoch"]  # epochs 2 and 3 (the last)
        (3, [2, 3])
    """

    def __init__(
        self,
        x,
        y,
        x_train=None,
        y_train=None,
        every=1,
        k=200,
        temperature=0.1,
        name="knn_top1",
        batch_size=256,
        value_range=None,
    ):
        super().__init__(every, batch_size, value_range)
        if int(k) < 1 or temperature <= 0:
            raise ValueError(f"need k >= 1 and temperature > 0, got k={k}, temperature={temperature}.")
        self.x, self.y, self.x_train, self.y_train = x, y, x_train, y_train
        self.k, self.temperature, self.name = int(k), float(temperature), name
        self._queries, self._gallery = _pair(x, y, x_train, y_train, value_range)

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch) or logs is None:
            return
        (xg, yg), (xq, yq) = self._gallery, self._queries
        accuracy = evaluation.knn_accuracy(
            self._embed(xg),
            yg,
            self._embed(xq),
            yq,
            k=self.k,
            temperature=self.temperature,
            top=(1,),
            num_classes=int(max(yg.max(), yq.max())) + 1,
        )
        self._log(logs, epoch, {self.name: accuracy["top1"]})

    def get_config(self):
        return {
            **super().get_config(),
            "x": self.x,
            "y": self.y,
            "x_train": self.x_train,
            "y_train": self.y_train,
            "k": self.k,
            "temperature": self.temperature,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="keras_ssl")
class LinearProbeMonitor(_EncoderMonitor):
    """Accuracy of a linear classifier on the evaluated encoder's detached features during `fit`.

    Design: a callback cannot see `fit`'s batches, and a probe trained inside
    the SSL step would need per-method code; so every `every` epochs (and at
    the last one) this runs `evaluation.linear_probe` on a held labelled set:
    features computed once in inference mode (no gradient reaches the
    encoder), a fresh softmax classifier trained for `epochs` epochs with a
    seeded, reproducible schedule, and the test top-1 accuracy written into
    the logs as `name` (History, TensorBoard), its epoch as `name + "_epoch"`.
    It is cheaper than the offline probe and its number is lower: report it
    as an "online linear" accuracy.

    Args:
        x, y: labelled images the classifier is trained on, and their labels.
        x_test, y_test: labelled images the accuracy is measured on; when
            omitted, `x`, `y` are split by `alternate_split`: the 1st, 3rd...
            image of each class train, the 2nd, 4th... test.
        every: epochs between probes.
        epochs, learning_rate: of the classifier's training (Adam, cosine).
        name: the key in the logs.
        batch_size: of the encoder's forward passes and of the classifier.
        value_range: pixel range of the images (see `data.check_images`).
        seed: of the classifier's initialisation and shuffling.

    Example:
        >>> from keras_ssl.monitors import LinearProbeMonitor
        >>> model = keras_ssl.SimCLR(encoder)
        >>> model.compile(optimizer="adam")
        >>> probe = LinearProbeMonitor(x_train, y_train, x_test, y_test, every=10, epochs=2)
        >>> history = model.fit(x_train, epochs=1, batch_size=32, callbacks=[probe], verbose=0)
        >>> len(history.history["linear_top1"])  # the last epoch is always probed
        1
    """

    def __init__(
        self,
        x,
        y,
        x_test=None,
        y_test=None,
        every=1,
        epochs=10,
        learning_rate=1e-3,
        name="linear_top1",
        batch_size=256,
        value_range=None,
        seed=0,
    ):
        super().__init__(every, batch_size, value_range)
        if int(epochs) < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}.")
        self.x, self.y, self.x_test, self.y_test = x, y, x_test, y_test
        self.epochs, self.learning_rate, self.name, self.seed = int(epochs), learning_rate, name, seed
        self._train, self._test = _pair(x, y, x_test, y_test, value_range)

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch) or logs is None:
            return
        (x, y), (x_test, y_test) = self._train, self._test
        result = evaluation.linear_probe(
            self._encoder(),
            x,
            y,
            x_test,
            y_test,
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            value_range=self.value_range,
            seed=self.seed,
        )
        self._log(logs, epoch, {self.name: result["top1"]})

    def get_config(self):
        return {
            **super().get_config(),
            "x": self.x,
            "y": self.y,
            "x_test": self.x_test,
            "y_test": self.y_test,
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "name": self.name,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="keras_ssl")
class CollapseMonitor(_EncoderMonitor):
    """Watches the evaluated encoder's features (`model.feature_encoder`) for collapse during `fit`.

    Every `every` epochs (and at the last one) the encoder embeds `x` in
    inference mode and the logs get `embedding_std` (`evaluation.embedding_std`:
    about `1/sqrt(D)` when healthy, 0 when all features coincide) and `rankme`
    (`evaluation.rankme`: 1 when collapsed to one direction, at most
    `min(len(x), D)`), with their epochs as `embedding_std_epoch` and
    `rankme_epoch`. A `UserWarning` naming the metric is issued when one
    falls below its threshold. These are the encoder's features (h), the
    ones evaluated downstream, not the projector's.

    Args:
        x: images (`uint8`, or float in [0, 1]); use more images than
            feature dimensions, or RankMe is capped by their count.
        every: epochs between checks.
        std_threshold: warn when `embedding_std` falls below it; default
            `0.1 / sqrt(D)`, a tenth of the value of isotropic features.
        rank_threshold: warn when `rankme` falls below it (1 is complete
            collapse). `None` turns either warning off.
        batch_size: images per encoder forward pass.
        value_range: pixel range of the images (see `data.check_images`).

    Example:
        >>> from keras_ssl.monitors import CollapseMonitor
        >>> model = keras_ssl.SimCLR(encoder)
        >>> model.compile(optimizer="adam")
        >>> history = model.fit(x_train, epochs=1, batch_size=32, callbacks=[CollapseMonitor(x_test)], verbose=0)
        >>> "embedding_std" in history.history, "rankme" in history.history
        (True, True)
    """

    def __init__(self, x, every=1, std_threshold=None, rank_threshold=2.0, batch_size=256, value_range=None):
        super().__init__(every, batch_size, value_range)
        data.check_images(x, value_range=value_range)
        self.x, self.std_threshold, self.rank_threshold = x, std_threshold, rank_threshold

    def on_epoch_end(self, epoch, logs=None):
        if not self._due(epoch):
            return
        features = self._embed(self.x)
        values = {"embedding_std": evaluation.embedding_std(features), "rankme": evaluation.rankme(features)}
        std_threshold = self.std_threshold
        if std_threshold is None:
            std_threshold = 0.1 / np.sqrt(features.shape[1])
        thresholds = {"embedding_std": std_threshold, "rankme": self.rank_threshold}
        for metric, value in values.items():
            if thresholds[metric] is not None and value < thresholds[metric]:
                warnings.warn(
                    f"CollapseMonitor: {metric} = {value:.4g} fell below {thresholds[metric]:.4g} "
                    f"at epoch {epoch + 1}: the encoder's features are collapsing.",
                    stacklevel=2,
                )
        if logs is not None:
            self._log(logs, epoch, values)

    def get_config(self):
        return {
            **super().get_config(),
            "x": self.x,
            "std_threshold": self.std_threshold,
            "rank_threshold": self.rank_threshold,
        }
