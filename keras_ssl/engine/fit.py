"""The engine's data policy for `fit` and `evaluate`: one validation path for every source, the
seeded batch order of arrays, and the callbacks the engine adds around the user's."""

import keras
import numpy as np

from keras_ssl import backend
from keras_ssl.checkpoints import BackupAndRestore
from keras_ssl.data import ArrayBatches, prepare_fit_data
from keras_ssl.data.sources import _IndexedBatches, _is_from, _numpy, _peek, _select, orders_itself
from keras_ssl.engine.callbacks import DataEpochs, MomentumScheduler, StopOnNaN


def check_fit_data(model, x, y, batch_size):
    """`(x, y, batch_size)` after the checks every source gets (see `data.prepare_fit_data`).

    Example:
        >>> from keras_ssl.engine.fit import check_fit_data
        >>> model = keras_ssl.SimCLR(encoder, projection_dim=8, hidden_dim=16)
        >>> x, y, batch_size = check_fit_data(model, x_train[:60], None, 16)
        >>> x.shape, y, batch_size   # cut to full batches of 16
        ((48, 16, 16, 3), None, 16)
    """
    x, y, batch_size = prepare_fit_data(
        x,
        y,
        batch_size,
        channels=model.image_shape[-1],
        value_range=model.value_range,
        min_size=model.image_size,
        check_batch=model.check_batch_size,
    )
    if model.needs_indices:
        if isinstance(x, np.ndarray):
            # Each image's row is its index; `fit_arguments` batches both in the seeded order.
            return (x, np.arange(len(x), dtype="int32")), y, batch_size
        x = with_indices(x, getattr(model, "num_samples", None), type(model).__name__)
    return x, y, batch_size


def fit_arguments(model, x, y, batch_size, kwargs):
    """What `keras.Model.fit` gets from `SSLModel.fit`: checked data and the engine's callbacks.

    NumPy arrays become `data.ArrayBatches` (seeded by the model's seed and
    the epoch, last incomplete batch dropped); a Keras `BackupAndRestore`
    becomes keras_ssl's kill-safe one; a `MomentumScheduler` is added when
    none is given, and `DataEpochs` then `StopOnNaN` go first, so the
    finiteness guard runs before any checkpoint callback.

    Returns:
        `(x, y, batch_size, kwargs, guard)`, `guard` the `DataEpochs` added.

    Example:
        >>> from keras_ssl.engine.fit import fit_arguments
        >>> model = keras_ssl.SimCLR(encoder, projection_dim=8, hidden_dim=16, seed=0)
        >>> x, y, batch_size, kwargs, guard = fit_arguments(model, x_train, None, 16, {"epochs": 2})
        >>> type(x).__name__, x.num_batches, y, batch_size
        ('ArrayBatches', 4, None, None)
        >>> [type(c).__name__ for c in kwargs["callbacks"]], kwargs["shuffle"]
        (['DataEpochs', 'StopOnNaN', 'MomentumScheduler'], False)
    """
    x, y, batch_size = model.check_fit_data(x, y, batch_size)  # a method may take (images, texts)
    indexed = model.needs_indices and isinstance(x, tuple)
    images = x[0] if indexed else x
    if (
        hasattr(x, "__next__")
        and kwargs.get("epochs", 1) - kwargs.get("initial_epoch", 0) > 1
        and not kwargs.get("steps_per_epoch")
    ):
        raise ValueError(
            f"fit(epochs={kwargs['epochs']}) got a generator or iterator, which is read once: the second "
            "epoch would find it empty (Keras then replays its first batches). Give a PyDataset, a list "
            "of batches or a torch DataLoader, or an endless generator with steps_per_epoch."
        )
    if (
        isinstance(images, np.ndarray)
        and (y is None or y.dtype.kind in "biuf")
        and not any(kwargs.get(k) for k in ("validation_split", "sample_weight", "class_weight"))
        and not backend.needs_array_input(model)
    ):
        # Seeded by epoch, not by the global state: exact resume (see ArrayBatches).
        shuffle = kwargs.pop("shuffle", True)
        x, y = ArrayBatches(images, y, batch_size or 32, shuffle=shuffle, seed=model.seed, indices=indexed), None
        batch_size = None
    if orders_itself(x):
        kwargs["shuffle"] = False  # Keras would reshuffle the batches from Python's global `random`
    callbacks = [
        BackupAndRestore.like(c) if type(c) is keras.callbacks.BackupAndRestore else c
        for c in kwargs.pop("callbacks", None) or []
    ]
    if callable(getattr(model, "begin_epoch", None)) and not any(isinstance(c, EpochHooks) for c in callbacks):
        callbacks.insert(0, EpochHooks())  # before any checkpoint callback saves the epoch's end
    if not any(isinstance(c, MomentumScheduler) for c in callbacks):
        callbacks.append(MomentumScheduler())
    if not any(isinstance(c, StopOnNaN) for c in callbacks):
        # First, before any checkpoint saves; checking the variables whenever one saves.
        every = [
            c.save_freq
            for c in callbacks
            if isinstance(c, (keras.callbacks.ModelCheckpoint, keras.callbacks.BackupAndRestore))
            and isinstance(getattr(c, "save_freq", None), int)
        ]
        callbacks.insert(0, StopOnNaN(weights_every=min(every) if every else None))
    guard = DataEpochs(x)
    callbacks.insert(0, guard)
    kwargs["callbacks"] = callbacks
    return x, y, batch_size, kwargs, guard


def with_indices(source, num_samples=None, owner="this method"):
    """A source of `(images, indices)` batches (after `to_dataset`), made to yield `((images, indices),)`.

    Methods that keep per-sample state (DeepCluster-v2's cluster of each
    sample) need each image's index in the dataset inside the step, as a
    model input next to the images rather than as a label. The first batch
    is checked, so a source without indices fails before any step.

    Args:
        source: what `to_dataset` returned: a `tf.data.Dataset`, `PyDataset`,
            torch `DataLoader` or generator of `(images, indices)` batches,
            `indices` int of shape `(B,)`.
        num_samples: indices must be below it (None: unchecked).
        owner: named in the error message.

    Returns:
        The same batches as `((images, indices),)`, in the same order.

    Example:
        >>> from keras_ssl.engine.fit import with_indices
        >>> batches = [(x_train[i : i + 16], np.arange(i, i + 16)) for i in range(0, 64, 16)]
        >>> (images, indices), = with_indices(keras_ssl.data.to_dataset(batches))[1]
        >>> images.shape, indices[:3].tolist()
        ((16, 16, 16, 3), [16, 17, 18])
        >>> with_indices(keras_ssl.data.to_dataset([x_train[:16]]), owner="DeepClusterV2")
        Traceback (most recent call last):
        ...
        ValueError: DeepClusterV2 keeps state per sample, so every batch must be (images, indices) ...
    """
    source, first = _peek(source)
    _check_indices(first, num_samples, owner)
    if _is_from(source, "tensorflow", "DatasetV2"):
        return source.map(lambda images, indices: ((images, indices),))
    if isinstance(source, keras.utils.PyDataset):
        return _IndexPairs(source)
    if _is_from(source, "torch", "DataLoader"):
        pairs = object.__new__(type(source))
        pairs.__dict__.update(source.__dict__)
        pairs._iterator = None
        pairs.collate_fn = _PairCollate(source.collate_fn)
        return pairs
    return (((batch[0], batch[1]),) for batch in map(_select, source))


def _check_indices(batch, num_samples, owner):
    problem = None
    if len(batch) != 2:
        problem = "its batches have no second element"
    else:
        images, indices = _numpy(batch[0]), _numpy(batch[1])
        if indices.dtype.kind not in "iu" or indices.shape != (len(images),):
            problem = f"the second element of a batch has dtype {indices.dtype} and shape {indices.shape}"
        elif indices.min() < 0 or (num_samples is not None and indices.max() >= num_samples):
            problem = f"its indices range over [{indices.min()}, {indices.max()}]"
    if problem:
        bound = f" below num_samples={num_samples}" if num_samples is not None else ""
        raise ValueError(
            f"{owner} keeps state per sample, so every batch must be (images, indices) with `indices` the int "
            f"positions (B,) of the images in the dataset (0 <= index{bound}), the same for an image every "
            f"epoch; {problem}. NumPy arrays get their indices from `fit`; for a tf.data.Dataset "
            "use `tf.data.Dataset.zip((images, tf.data.Dataset.range(n)))` before batching."
        )


class _IndexPairs(_IndexedBatches):
    """A `PyDataset` of `(images, indices)` batches yielding `((images, indices),)`."""

    def __getitem__(self, index):
        images, indices = _select(self.source[index])
        return ((images, indices),)


class _PairCollate:
    """Picklable collate function turning `(images, indices)` into `((images, indices),)`."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, samples):
        images, indices = _select(self.collate_fn(samples))[:2]
        return ((images, indices),)


class EpochHooks(keras.callbacks.Callback):
    """Runs a method's `begin_epoch(epoch)` and `end_epoch(epoch)`: state changed once per epoch, outside the step.

    `SSLModel.fit` adds it for a method that defines `begin_epoch` (DeepCluster-v2's k-means over its
    memory bank), ahead of the user's callbacks, so a checkpoint written at an epoch's end holds what
    `end_epoch` set. The hooks keep their own state in the model's variables: a run resumed in the
    middle of an epoch must not redo what `begin_epoch` did at its start.

    Example:
        >>> from keras_ssl.engine.fit import EpochHooks
        >>> class Clustering(keras.Model):
        ...     def begin_epoch(self, epoch):
        ...         print("k-means before epoch", epoch)
        >>> hooks = EpochHooks()
        >>> hooks.set_model(Clustering())
        >>> hooks.on_epoch_begin(3)
        k-means before epoch 3
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model.begin_epoch(epoch)

    def on_epoch_end(self, epoch, logs=None):
        end_epoch = getattr(self.model, "end_epoch", None)
        if callable(end_epoch):
            end_epoch(epoch)
