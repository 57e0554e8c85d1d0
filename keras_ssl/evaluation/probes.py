"""Trained protocols: a linear probe on frozen features, fine-tuning, and label-fraction subsets."""

import keras
import numpy as np

from keras_ssl import optimizers
from keras_ssl.backbones.clone import clone_model, plain_keras
from keras_ssl.data import check_images, pick_per_class
from keras_ssl.evaluation.common import _accuracy, _labels
from keras_ssl.evaluation.knn import embed


# ------------------------------------------------------------- training
def linear_probe(
    encoder,
    x_train,
    y_train,
    x_test,
    y_test,
    epochs=100,
    batch_size=256,
    learning_rate=1e-3,
    value_range=None,
    seed=0,
    verbose=0,
    return_model=False,
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
        >>> from keras_ssl.evaluation import linear_probe
        >>> result = linear_probe(encoder, x_train, y_train, x_test, y_test, epochs=2, batch_size=32)
        >>> sorted(result)
        ['top1', 'train_top1']
        >>> 0.0 <= result["top1"] <= 1.0
        True
    """
    f_train = embed(encoder, x_train, batch_size, value_range)
    f_test = embed(encoder, x_test, batch_size, value_range)
    y_train, y_test = _labels(y_train, len(f_train)), _labels(y_test, len(f_test))
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}.")
    std = f_train.std(axis=0) + 1e-6
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    classifier = keras.Sequential(
        [
            keras.Input((f_train.shape[1],)),
            keras.layers.Normalization(mean=f_train.mean(axis=0), variance=std**2),
            keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed)),
        ]
    )
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
    encoder,
    x_train,
    y_train,
    x_test,
    y_test,
    epochs=10,
    batch_size=64,
    learning_rate=None,
    encoder_learning_rate_scale=0.1,
    label_fraction=1.0,
    augment=True,
    value_range=None,
    seed=0,
    verbose=0,
    return_model=False,
    layer_decay=None,
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
        layer_decay: layer-wise rate decay of a keras_ssl `ViT` encoder (BEiT's,
            MAE's and SimMIM's fine-tuning: 0.65-0.75): block `i` of `L` learns
            at `layer_decay ** (L - i)` times the encoder's rate, the embeddings
            at `layer_decay ** (L + 1)` (`ViT.layer_decay_multipliers`), with
            `keras_ssl.optimizers.SGD` (PyTorch's) carrying the rates; None:
            every layer alike.

    Returns:
        `{"top1": test accuracy, "train_top1": accuracy on the labelled
        training images, "num_labeled": their count}`, and the classifier
        (raw images -> logits) when `return_model`.

    Example:
        >>> from keras_ssl.evaluation import fine_tune
        >>> result, classifier = fine_tune(
        ...     encoder, x_train, y_train, x_test, y_test, epochs=1, batch_size=16, label_fraction=0.25,
        ...     return_model=True,
        ... )
        >>> result["num_labeled"]  # a quarter of the 16 images of each of the 4 classes
        16
        >>> classifier.input_shape, classifier.output_shape  # raw images -> logits
        ((None, 16, 16, 3), (None, 4))
    """
    value_range = check_images(x_train, value_range=value_range)
    check_images(x_test, channels=x_train.shape[-1], value_range=value_range)
    y_train, y_test = _labels(y_train, len(x_train)), _labels(y_test, len(x_test))
    if encoder_learning_rate_scale < 0:
        raise ValueError(f"encoder_learning_rate_scale must be >= 0, got {encoder_learning_rate_scale}.")
    if layer_decay is not None and not hasattr(encoder, "layer_decay_multipliers"):
        raise ValueError(
            f"layer_decay needs a keras_ssl ViT encoder (backbones.ViT), whose blocks it decays; "
            f"got {type(encoder).__name__}."
        )
    keep = labeled_subset(y_train, label_fraction, seed)
    x_train, y_train = x_train[keep], y_train[keep]
    num_classes = int(max(y_train.max(), y_test.max()) + 1)

    low, high = value_range
    inputs = keras.Input(x_train.shape[1:])
    x = keras.layers.Rescaling(1.0 / (high - low), offset=-low / (high - low))(inputs)
    if augment:
        x = keras.layers.RandomFlip("horizontal", seed=seed)(x)
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
    if layer_decay is None:
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    else:
        multipliers = copy.layer_decay_multipliers(layer_decay)
        optimizer = optimizers.SGD(schedule, momentum=0.9, nesterov=True, lr_multipliers=multipliers)
    classifier.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    classifier.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=verbose)
    # The same layers without the training-only GradientScale, and with
    # Keras's own BatchNormalization: plain Keras, so the classifier loads
    # without keras_ssl.
    classifier = plain_keras(keras.Model(inputs, head(features), name="fine_tuned"))
    results = {
        "top1": _accuracy(classifier.predict(x_test, batch_size=batch_size, verbose=0), y_test),
        "train_top1": _accuracy(classifier.predict(x_train, batch_size=batch_size, verbose=0), y_train),
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
        >>> from keras_ssl.evaluation import semi_supervised
        >>> results = semi_supervised(encoder, x_train, y_train, x_test, y_test, epochs=1, batch_size=16)
        >>> {fraction: r["num_labeled"] for fraction, r in results.items()}  # at least 1 per class
        {0.01: 4, 0.1: 8}
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
        >>> from keras_ssl.evaluation import labeled_subset
        >>> idx = labeled_subset(y_train, 0.25)  # 64 images, 16 per class
        >>> np.bincount(y_train[idx])
        array([4, 4, 4, 4])
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
        >>> from keras_ssl.evaluation import GradientScale
        >>> inputs = keras.Input((16, 16, 3))
        >>> h = GradientScale(0.1)(encoder(inputs))  # the encoder learns at a tenth of the head's rate
        >>> classifier = keras.Model(inputs, keras.layers.Dense(4)(h))
        >>> classifier.output_shape
        (None, 4)
        >>> ops.convert_to_numpy(GradientScale(0.1)(ops.ones((1, 3))))  # forward: the identity
        array([[1., 1., 1.]], dtype=float32)
    """

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, x):
        return self.scale * x + keras.ops.stop_gradient((1.0 - self.scale) * x)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


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
