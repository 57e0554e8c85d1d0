"""Evaluating a trained encoder: kNN, linear probe, fine-tuning, and metrics.

Works with any encoder: a `keras.Model` (or callable layer) mapping float
images in [0, 1], `(B, H, W, C)`, to features `(B, D)`; rank-4 outputs are
global-average-pooled. Say which protocol a number comes from: they differ
by points (see `knn_classify`, `linear_probe`, `fine_tune`).

The offline protocols (kNN, metrics) run in NumPy; training runs in Keras
on whichever backend is active.
"""

import keras
import numpy as np

from keras_ssl.data import pick_per_class, check_images, to_unit_float


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
        >>> features = embed(model.encoder, x_test)  # uint8 CIFAR images
    """
    value_range = check_images(x, value_range=value_range)
    chunk = max(1, int(batch_size)) * 16  # convert to float a slice at a time
    out = []
    for start in range(0, len(x), chunk):
        images = to_unit_float(x[start : start + chunk], value_range)
        if isinstance(encoder, keras.Model):
            h = encoder.predict(images, batch_size=batch_size, verbose=0)
        else:
            h = np.concatenate([
                keras.ops.convert_to_numpy(encoder(images[i : i + batch_size], training=False))
                for i in range(0, len(images), batch_size)
            ])
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
        >>> sims, idx = nearest_neighbors(test_features, train_features, k=5)
    """
    # float32: cosine similarities need no more, and features can be large
    query = _normalize(_matrix(query, "query", "float32"))
    gallery = _normalize(_matrix(gallery, "gallery", "float32"))
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"query features have dimension {query.shape[1]}, gallery {gallery.shape[1]}."
        )
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
    train_features, train_labels, test_features, k=200, temperature=0.1, num_classes=None,
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
        >>> scores = knn_classify(train_features, y_train, test_features)
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
        >>> raw_pixel_knn(x_train, y_train, x_test, y_test)["top1"]
    """
    from keras_ssl import data

    if max(x_train.shape[1:3]) > max_side:
        x_train, x_test = (data.resize_images(x, max_side) for x in (x_train, x_test))
    pixels = [data.to_unit_float(x, value_range).reshape(len(x), -1) for x in (x_train, x_test)]
    return knn_accuracy(pixels[0], y_train, pixels[1], y_test, **kwargs)


def knn_accuracy(
    train_features, train_labels, test_features, test_labels, k=200, temperature=0.1,
    top=(1, 5), num_classes=None, batch_size=1024,
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
        >>> knn_accuracy(train_features, y_train, test_features, y_test)["top1"]
    """
    scores = knn_classify(
        train_features, train_labels, test_features, k, temperature, num_classes, batch_size
    )
    return _top_accuracies(scores, _labels(test_labels, len(scores)), top)


# ------------------------------------------------------------- training
def linear_probe(
    encoder, x_train, y_train, x_test, y_test, epochs=100, batch_size=256, learning_rate=1e-3,
    value_range=None, seed=0, verbose=0, return_model=False,
):
    """Offline linear evaluation on frozen features.

    Features are computed once (`embed`, inference mode), standardised with
    the training mean and std, and a softmax classifier (one Dense layer) is
    trained with Adam, the learning rate cosine-decayed to 0 over all steps,
    no weight decay, no augmentation. The result depends only on the
    arguments: the initialisation and the per-epoch shuffling follow `seed`.

    Args:
        encoder: the frozen encoder.
        x_train, y_train, x_test, y_test: images and integer labels.
        epochs, batch_size, learning_rate: of the classifier's training.
        value_range: `(low, high)` of the pixels (see `check_images`).
        seed: seed of the classifier's initialisation and of the shuffling.
        verbose: passed to `fit`.
        return_model: also return the classifier (features -> logits, the
            standardisation included).

    Returns:
        `{"top1": test accuracy, "train_top1": training accuracy}`, and the
        classifier when `return_model`.

    Example:
        >>> linear_probe(model.encoder, x_train, y_train, x_test, y_test)["top1"]
    """
    f_train = embed(encoder, x_train, batch_size, value_range)
    f_test = embed(encoder, x_test, batch_size, value_range)
    y_train, y_test = _labels(y_train, len(f_train)), _labels(y_test, len(f_test))
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}.")
    std = f_train.std(axis=0) + 1e-6
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    classifier = keras.Sequential([
        keras.Input((f_train.shape[1],)),
        keras.layers.Normalization(mean=f_train.mean(axis=0), variance=std**2),
        keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed)),
    ])
    steps = epochs * -(-len(f_train) // batch_size)
    classifier.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    batches = _ShuffledBatches(f_train, y_train, batch_size, seed)
    classifier.fit(batches, epochs=epochs, shuffle=False, verbose=verbose)  # batches shuffle themselves
    results = {
        "top1": _accuracy(classifier.predict(f_test, batch_size=1024, verbose=0), y_test),
        "train_top1": _accuracy(classifier.predict(f_train, batch_size=1024, verbose=0), y_train),
    }
    return (results, classifier) if return_model else results


def fine_tune(
    encoder, x_train, y_train, x_test, y_test, epochs=10, batch_size=64, learning_rate=None,
    encoder_learning_rate_scale=0.1, label_fraction=1.0, augment=True, value_range=None,
    seed=0, verbose=0, return_model=False,
):
    """Fine-tunes a copy of the encoder with a new linear head.

    The encoder is cloned (the original is left untouched), a Dense head is
    added, and everything is trained with SGD (Nesterov momentum 0.9, the
    learning rate cosine-decayed to 0), the encoder at a lower rate: its
    gradients pass through `GradientScale(encoder_learning_rate_scale)`.
    SGD, not Adam: Adam normalises gradient magnitudes away, so scaling the
    gradient would not lower its step. BatchNorm runs in training mode and
    the test accuracy uses its moving statistics: those of a pretrained
    encoder are good from the start, a random one needs many steps.

    Args:
        encoder: the pretrained encoder.
        x_train, y_train, x_test, y_test: images and integer labels.
        epochs, batch_size: of the training.
        learning_rate: the head's peak rate; default `0.05 * batch_size / 256`
            (SimCLR's fine-tuning rule).
        encoder_learning_rate_scale: encoder rate / head rate (0 freezes
            its weights, BatchNorm statistics still adapt).
        label_fraction: share of the labels used, class-balanced
            (`labeled_subset`): 0.01 and 0.1 are the semi-supervised settings.
        augment: random horizontal flips during training.
        value_range: `(low, high)` of the pixels (see `check_images`).
        seed: seed of the subset, the head and the flips.
        verbose: passed to `fit`.
        return_model: also return the fine-tuned classifier.

    Returns:
        `{"top1": test accuracy, "train_top1": accuracy on the labelled
        training images, "num_labeled": their count}`, and the classifier
        (raw images -> logits) when `return_model`.

    Example:
        >>> fine_tune(model.encoder, x_train, y_train, x_test, y_test, label_fraction=0.1)
    """
    value_range = check_images(x_train, value_range=value_range)
    check_images(x_test, channels=x_train.shape[-1], value_range=value_range)
    y_train, y_test = _labels(y_train, len(x_train)), _labels(y_test, len(x_test))
    if encoder_learning_rate_scale < 0:
        raise ValueError(
            f"encoder_learning_rate_scale must be >= 0, got {encoder_learning_rate_scale}."
        )
    keep = labeled_subset(y_train, label_fraction, seed)
    x_train, y_train = x_train[keep], y_train[keep]
    num_classes = int(max(y_train.max(), y_test.max()) + 1)

    low, high = value_range
    inputs = keras.Input(x_train.shape[1:])
    x = keras.layers.Rescaling(1.0 / (high - low), offset=-low / (high - low))(inputs)
    if augment:
        x = keras.layers.RandomFlip("horizontal", seed=seed)(x)
    from keras_ssl.backbones.clone import clone_model, plain_keras

    copy = clone_model(encoder, input_shape=x_train.shape[1:])
    features = copy(x)
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D()(features)
    elif len(features.shape) == 3:
        features = keras.layers.GlobalAveragePooling1D()(features)
    init = keras.initializers.GlorotUniform(seed + 1)
    head = keras.layers.Dense(num_classes, kernel_initializer=init)
    h = features
    if encoder_learning_rate_scale != 1:
        h = GradientScale(encoder_learning_rate_scale)(h)
    classifier = keras.Model(inputs, head(h))

    steps = epochs * -(-len(x_train) // batch_size)
    learning_rate = learning_rate or 0.05 * batch_size / 256
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    classifier.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    classifier.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=verbose)
    # The same layers without the training-only GradientScale, and with
    # Keras's own BatchNormalization: plain Keras, so the classifier loads
    # without keras_ssl.
    classifier = plain_keras(keras.Model(inputs, head(features), name="fine_tuned"))
    results = {
        "top1": _accuracy(classifier.predict(x_test, batch_size=batch_size, verbose=0), y_test),
        "train_top1": _accuracy(
            classifier.predict(x_train, batch_size=batch_size, verbose=0), y_train
        ),
        "num_labeled": len(keep),
    }
    return (results, classifier) if return_model else results


def semi_supervised(encoder, x_train, y_train, x_test, y_test, fractions=(0.01, 0.1), **kwargs):
    """Semi-supervised evaluation: `fine_tune` on class-balanced label fractions.

    Args:
        encoder, x_train, y_train, x_test, y_test: as in `fine_tune`.
        fractions: the label fractions; 1 % and 10 % are the papers' settings.
        **kwargs: other `fine_tune` options (epochs, batch_size, seed...).

    Returns:
        `{fraction: fine_tune's result}`.

    Example:
        >>> semi_supervised(model.encoder, x_train, y_train, x_test, y_test)[0.01]["top1"]
    """
    if "label_fraction" in kwargs or "return_model" in kwargs:
        raise TypeError("semi_supervised sets label_fraction itself and returns no models.")
    return {
        fraction: fine_tune(encoder, x_train, y_train, x_test, y_test, label_fraction=fraction, **kwargs)
        for fraction in fractions
    }


def labeled_subset(labels, fraction, seed=0):
    """Indices of a class-balanced subset: `round(fraction * n_c)` per class, at least 1.

    Args:
        labels: `(N,)` integer labels.
        fraction: in (0, 1]; 1 keeps everything.
        seed: which images are picked.

    Returns:
        sorted int indices into `labels`.

    Example:
        >>> idx = labeled_subset(y_train, 0.01)  # 50 per CIFAR-10 class
    """
    labels = _labels(labels, None)
    if not 0 < fraction <= 1:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}.")
    if fraction == 1:
        return np.arange(len(labels))
    return pick_per_class(labels, fraction, seed, minimum=1)


@keras.saving.register_keras_serializable(package="keras_ssl")
class GradientScale(keras.layers.Layer):
    """Identity forward; multiplies the gradient flowing back by `scale`.

    `y = scale * x + stop_gradient((1 - scale) * x)`, so everything upstream
    learns at `scale` times the rate under SGD-type optimizers.

    Args:
        scale: the gradient multiplier.

    Example:
        >>> h = GradientScale(0.1)(encoder(images))
    """

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, x):
        return self.scale * x + keras.ops.stop_gradient((1.0 - self.scale) * x)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


# ------------------------------------------------------------- metrics
def embedding_std(z):
    """Mean over dimensions of the batch std of L2-normalised `z`.

    About `1/sqrt(D)` for healthy embeddings, 0 when collapsed to a point.

    Args:
        z: `(N, D)` embeddings.

    Returns:
        float.

    Example:
        >>> embedding_std(np.random.normal(size=(1000, 64)))  # ~0.125
    """
    return float(_normalize(_matrix(z, "z")).std(axis=0).mean())


def rankme(z, eps=1e-7):
    """RankMe effective rank (Garrido et al., 2023).

    `exp(entropy(p))` with `p_k = s_k / sum(s) + eps`, `s` the singular
    values of `z`: 1 for collapsed (rank-1) embeddings, up to `min(N, D)`.

    Args:
        z: `(N, D)` embeddings (not centred, as in the paper).
        eps: keeps the logarithm finite.

    Returns:
        float.

    Example:
        >>> rankme(np.random.normal(size=(2000, 16)))  # ~15.9
    """
    s = np.linalg.svd(_matrix(z, "z"), compute_uv=False)
    p = s / max(s.sum(), np.finfo("float64").tiny) + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def alignment(z1, z2, alpha=2):
    """Alignment (Wang & Isola, 2020): mean `||f(x) - f(y)||^alpha` over positive pairs.

    Args:
        z1, z2: `(N, D)` embeddings of the two views of each image
            (L2-normalised here).
        alpha: the exponent.

    Returns:
        float, 0 for perfectly aligned pairs, at most `2^alpha`.

    Example:
        >>> alignment(embed(encoder, view1), embed(encoder, view2))
    """
    z1, z2 = _normalize(_matrix(z1, "z1")), _normalize(_matrix(z2, "z2"))
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {z1.shape} and {z2.shape}.")
    return float((np.linalg.norm(z1 - z2, axis=1) ** alpha).mean())


def uniformity(z, t=2, batch_size=1024):
    """Uniformity (Wang & Isola, 2020): `log mean_{i<j} exp(-t ||z_i - z_j||^2)`.

    Args:
        z: `(N, D)` embeddings, N >= 2 (L2-normalised here). Cost O(N^2):
            subsample large sets.
        t: the kernel's scale.
        batch_size: rows per chunk.

    Returns:
        float: 0 when all points coincide, more negative when spread out.

    Example:
        >>> uniformity(np.random.normal(size=(500, 32)))  # ~ -3.9
    """
    z = _normalize(_matrix(z, "z"))
    n = len(z)
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 embeddings, got {n}.")
    # A running log-sum-exp keeps memory at batch_size * N, not N^2 / 2.
    total = -np.inf
    for start in range(0, n - 1, batch_size):
        rows = z[start : start + batch_size]
        sq = np.maximum(2.0 - 2.0 * rows @ z.T, 0.0)  # unit vectors: |a-b|^2 = 2 - 2ab
        upper = np.arange(n)[None, :] > np.arange(start, start + len(rows))[:, None]
        logits = -t * sq[upper]
        top = logits.max()
        total = np.logaddexp(total, top + np.log(np.sum(np.exp(logits - top))))
    return float(total - np.log(n * (n - 1) / 2))


# ------------------------------------------------------------- helpers
def recall_at_k(image_embeddings, text_embeddings, ks=(1, 5), labels=None):
    """Retrieval recall@k both ways for paired rows of two embedding arrays.

    Args:
        image_embeddings, text_embeddings: `(N, D)` NumPy arrays, row `i` pairs.
        ks: the `k`s.
        labels: optional `(N,)`: a hit is any retrieved row with the query's label.

    Returns:
        dict `{"image_to_text@k": r, "text_to_image@k": r}`.

    Example:
        >>> e = np.eye(4)
        >>> recall_at_k(e, e, ks=(1,))
        {'image_to_text@1': 1.0, 'text_to_image@1': 1.0}
    """
    a = _matrix(image_embeddings, "image_embeddings", "float32")
    b = _matrix(text_embeddings, "text_embeddings", "float32")
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings must have one shape (N, D), got {a.shape} and {b.shape}.")
    a, b = _normalize(a), _normalize(b)
    key = np.arange(len(a)) if labels is None else np.asarray(labels).reshape(-1)
    sim = a @ b.T
    result = {}
    for name, s in (("image_to_text", sim), ("text_to_image", sim.T)):
        # stable sort: ties rank the lower index first
        ranked = np.argsort(-s, axis=1, kind="stable")
        for k in ks:
            hits = key[ranked[:, :k]] == key[:, None]
            result[f"{name}@{k}"] = float(hits.any(axis=1).mean())
    return result


def _numpy(x):
    return np.asarray(x) if isinstance(x, (np.ndarray, list, tuple)) else keras.ops.convert_to_numpy(x)


def _matrix(z, name, dtype="float64"):
    z = np.asarray(_numpy(z), dtype)
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"`{name}` must be a non-empty (N, D) array, got shape {z.shape}.")
    return z


def _normalize(z):
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12).astype(z.dtype)


def _labels(y, n):
    y = np.asarray(_numpy(y)).reshape(-1)
    if y.dtype.kind not in "ui" or (y.size and y.min() < 0):
        raise ValueError(f"labels must be non-negative integers, got dtype {y.dtype}.")
    if n is not None and len(y) != n:
        raise ValueError(f"got {len(y)} labels for {n} images/features.")
    return y.astype("int64")


def _accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def _top_accuracies(scores, labels, top):
    order = np.argsort(-scores, axis=1, kind="stable")
    return {f"top{n}": float(np.mean((order[:, :n] == labels[:, None]).any(axis=1))) for n in top}


class _ShuffledBatches(keras.utils.PyDataset):
    """`(x, y)` batches in an order reshuffled each epoch from `seed` alone.

    `fit(shuffle=True)` draws from the global NumPy (or TensorFlow) random
    state, so two probes of the same features would differ.
    """

    def __init__(self, x, y, batch_size, seed):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, int(batch_size)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    @property
    def num_batches(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.x[rows], self.y[rows]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))
