"""Features and nearest neighbours: `embed`, weighted kNN (lightly's k=200, T=0.1) and the raw-pixel baseline."""

import keras
import numpy as np

from keras_ssl import data
from keras_ssl.data import check_images, to_unit_float
from keras_ssl.evaluation.common import (
    _labels,
    _matrix,
    _normalize,
    _top_accuracies,
)


# ------------------------------------------------------------- features
def embed(encoder, x, batch_size=256, value_range=None):
    """Encoder features of a NumPy image array, in inference mode.

    Args:
        encoder: `keras.Model` or layer mapping [0, 1] images to features.
        x: images `(N, H, W, C)`: uint8, or float in [0, 1], or any dtype
            with `value_range`.
        batch_size: images per forward pass.
        value_range: `(low, high)` of `x`'s pixels (see `check_images`).

    Returns:
        float32 NumPy array `(N, D)`.

    Example:
        >>> from keras_ssl.evaluation import embed
        >>> features = embed(encoder, x_test)  # uint8 images (N, 16, 16, 3)
        >>> features.shape, features.dtype
        ((32, 32), dtype('float32'))
    """
    value_range = check_images(x, value_range=value_range)
    chunk = max(1, int(batch_size)) * 16  # convert to float a slice at a time
    out = []
    for start in range(0, len(x), chunk):
        images = to_unit_float(x[start : start + chunk], value_range)
        if isinstance(encoder, keras.Model):
            h = encoder.predict(images, batch_size=batch_size, verbose=0)
        else:
            h = np.concatenate(
                [
                    keras.ops.convert_to_numpy(encoder(images[i : i + batch_size], training=False))
                    for i in range(0, len(images), batch_size)
                ]
            )
        h = np.asarray(h, "float32")
        # Maps (B, H, W, C) and tokens (B, T, D) are averaged, as `SSLModel` pools them.
        out.append(h.mean(axis=tuple(range(1, h.ndim - 1))) if h.ndim in (3, 4) else h.reshape(len(h), -1))
    return np.concatenate(out)


def nearest_neighbors(query, gallery, k, batch_size=1024):
    """The `k` most cosine-similar gallery rows of each query row.

    Args:
        query: `(Q, D)` features.
        gallery: `(N, D)` features.
        k: neighbours per query (clipped to `N`).
        batch_size: query rows per chunk (memory is `batch_size * N`).

    Returns:
        `(similarities, indices)`, both `(Q, k)`, most similar first.

    Example:
        >>> from keras_ssl.evaluation import nearest_neighbors
        >>> gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> sims, idx = nearest_neighbors(np.array([[1.0, 0.2]]), gallery, k=2)
        >>> idx
        array([[0, 2]])
        >>> sims.round(2)
        array([[0.98, 0.83]], dtype=float32)
    """
    # float32: cosine similarities need no more, and features can be large
    query = _normalize(_matrix(query, "query", "float32"))
    gallery = _normalize(_matrix(gallery, "gallery", "float32"))
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query features have dimension {query.shape[1]}, gallery {gallery.shape[1]}.")
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    k = min(int(k), len(gallery))
    sims, indices = [], []
    for start in range(0, len(query), batch_size):
        s = query[start : start + batch_size] @ gallery.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        top_s = np.take_along_axis(s, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        indices.append(np.take_along_axis(top, order, axis=1))
        sims.append(np.take_along_axis(top_s, order, axis=1))
    return np.concatenate(sims), np.concatenate(indices)


def knn_classify(
    train_features,
    train_labels,
    test_features,
    k=200,
    temperature=0.1,
    num_classes=None,
    batch_size=1024,
):
    """Weighted kNN class scores (InstDisc / lightly protocol).

    Features are L2-normalised; each test row's `k` most cosine-similar
    training rows vote for their class with weight `exp(similarity / T)`.

    Args:
        train_features: `(N, D)`.
        train_labels: `(N,)` integer labels.
        test_features: `(M, D)`.
        k: neighbours (clipped to `N`); lightly uses 200.
        temperature: `T` of the vote weights; lightly uses 0.1.
        num_classes: defaults to `max(train_labels) + 1`.
        batch_size: test rows per chunk.

    Returns:
        `(M, num_classes)` scores: the summed weights per class.

    Example:
        >>> from keras_ssl.evaluation import embed, knn_classify
        >>> train_features = embed(encoder, x_train, batch_size=32)
        >>> test_features = embed(encoder, x_test, batch_size=32)
        >>> scores = knn_classify(train_features, y_train, test_features, k=20)
        >>> scores.shape  # (test images, classes)
        (32, 4)
        >>> predictions = scores.argmax(axis=1)
    """
    train_labels = _labels(train_labels, len(train_features))
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    num_classes = int(num_classes or train_labels.max() + 1)
    if train_labels.max() >= num_classes:
        raise ValueError(f"labels go up to {train_labels.max()} but num_classes={num_classes}.")
    sims, indices = nearest_neighbors(test_features, train_features, k, batch_size)
    scores = np.zeros((len(sims), num_classes))
    rows = np.repeat(np.arange(len(sims)), sims.shape[1])
    np.add.at(scores, (rows, train_labels[indices].ravel()), np.exp(sims / temperature).ravel())
    return scores


def raw_pixel_knn(x_train, y_train, x_test, y_test, value_range=None, max_side=64, **kwargs):
    """The baseline an encoder must beat: `knn_accuracy` on the pixels themselves.

    Args:
        x_train, y_train, x_test, y_test: labelled images, `(N, H, W, C)`.
        value_range: pixel range of the images (see `data.to_unit_float`).
        max_side: larger images are resized down to this side first (memory).
        **kwargs: `knn_accuracy`'s options (`k`, `temperature`).

    Returns:
        `knn_accuracy`'s dict (`top1`, `top5`).

    Example:
        >>> from keras_ssl.evaluation import raw_pixel_knn
        >>> (x_train, y_train), (x_test, y_test) = keras_ssl.data.load("digits")  # bundled, no download
        >>> round(raw_pixel_knn(x_train, y_train, x_test, y_test)["top1"], 2)
        0.92
    """
    if max(x_train.shape[1:3]) > max_side:
        x_train, x_test = (data.resize_images(x, max_side) for x in (x_train, x_test))
    pixels = [data.to_unit_float(x, value_range).reshape(len(x), -1) for x in (x_train, x_test)]
    return knn_accuracy(pixels[0], y_train, pixels[1], y_test, **kwargs)


def knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    k=200,
    temperature=0.1,
    top=(1, 5),
    num_classes=None,
    batch_size=1024,
):
    """Top-n accuracies of `knn_classify`.

    Args:
        train_features, train_labels, test_features: as in `knn_classify`.
        test_labels: `(M,)` integer labels.
        k, temperature, num_classes, batch_size: as in `knn_classify`.
        top: the `n` of each top-n accuracy (n >= classes gives 1.0).

    Returns:
        `{"top1": ..., "top5": ...}` (one key per `top` entry), floats in [0, 1].

    Example:
        >>> from keras_ssl.evaluation import knn_accuracy
        >>> rng = np.random.default_rng(0)
        >>> centres = rng.normal(size=(4, 16))  # features that separate the 4 classes
        >>> train_features = centres[y_train] + 0.1 * rng.normal(size=(64, 16))
        >>> test_features = centres[y_test] + 0.1 * rng.normal(size=(32, 16))
        >>> knn_accuracy(train_features, y_train, test_features, y_test, top=(1, 2))
        {'top1': 1.0, 'top2': 1.0}
    """
    scores = knn_classify(train_features, train_labels, test_features, k, temperature, num_classes, batch_size)
    return _top_accuracies(scores, _labels(test_labels, len(scores)), top)
