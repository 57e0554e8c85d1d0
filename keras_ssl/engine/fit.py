"""The engine's data policy for `fit` and `evaluate`: one validation path for every source, the
seeded batch order of arrays, the callbacks the engine adds around the user's, and atomic saves."""

import os

import keras
import numpy as np

from keras_ssl import backend, rundir
from keras_ssl.checkpoints import BackupAndRestore
from keras_ssl.data import ArrayBatches, PerSample, orders_itself, prepare_fit_data, to_unit_float
from keras_ssl.engine.callbacks import DataEpochs, MomentumScheduler, StopOnNaN, order_callbacks


def check_fit_data(model, x, y, batch_size):
    """`(x, y, batch_size)` after the checks every source gets (see `data.prepare_fit_data`).

    A method that declares `needs_labels` or `needs_indices` gets them the
    same way from every source (`data.per_sample`): NumPy images come back
    as `((images, labels or rows), None, batch_size)`, labels checked; any
    other source's `(images, labels or indices)` batches become the one
    input `((images, per_sample),)`, checked as they are read.

    Example:
        >>> from keras_ssl.engine.fit import check_fit_data
        >>> model = keras_ssl.SimCLR(encoder, projection_dim=8, hidden_dim=16)
        >>> x, y, batch_size = check_fit_data(model, x_train[:60], None, 16)
        >>> x.shape, y, batch_size   # cut to full batches of 16
        ((48, 16, 16, 3), None, 16)
        >>> (images, labels), y, batch_size = check_fit_data(keras_ssl.SupCon(encoder), x_train[:60], y_train[:60], 16)
        >>> images.shape, labels.dtype, y
        ((48, 16, 16, 3), dtype('int32'), None)
    """
    per_sample = PerSample.of(model)
    arrays = isinstance(x, np.ndarray)
    if per_sample is not None and arrays and per_sample.labelled:
        y = per_sample.for_arrays(y, len(x))
    x, y, batch_size = prepare_fit_data(
        x,
        y,
        batch_size,
        channels=model.image_shape[-1],
        value_range=model.value_range,
        min_size=model.image_size,
        check_batch=model.check_batch_size,
        min_batch=model.min_batch_size,
        per_sample=per_sample,
    )
    if per_sample is not None and arrays:
        if per_sample.labelled:
            return (x, y), None, batch_size
        return (x, per_sample.for_arrays(None, len(x))), y, batch_size
    return x, y, batch_size


def fit_arguments(model, x, y, batch_size, kwargs):
    """What `keras.Model.fit` gets from `SSLModel.fit`: checked data and the engine's callbacks.

    NumPy arrays become `data.ArrayBatches` (seeded by the model's seed and
    the epoch, last incomplete batch dropped), or stay arrays under
    `tf.distribute` (float32 in [0, 1] across workers, whose collectives
    refuse uint8); a Keras `BackupAndRestore`
    becomes keras_ssl's kill-safe one; a `MomentumScheduler` is added when
    none is given; `DataEpochs` goes first, and every `StopOnNaN` (the
    user's too) and `TerminateOnNaN` run before the first checkpoint
    callback (`callbacks.order_callbacks`).

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
    packed = (model.needs_labels or model.needs_indices) and isinstance(x, tuple)  # arrays and their rows
    images, per_sample = x if packed else (x, None)
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
    if isinstance(images, np.ndarray) and images.dtype.kind in "ui" and backend.process_count() > 1:
        if backend.needs_array_input(model):  # TF's MultiWorkerMirroredStrategy
            # Keras averages the first batch across the workers to build the model, and TensorFlow's
            # collectives refuse integers: float32 holds every uint8 value exactly, as `preprocess` would.
            images = to_unit_float(images) if model.value_range is None else images.astype("float32")
            x = (images, per_sample) if packed else images
    if (
        isinstance(images, np.ndarray)
        and (y is None or y.dtype.kind in "biuf")
        and not any(kwargs.get(k) for k in ("validation_split", "sample_weight", "class_weight"))
        and not backend.needs_array_input(model)
    ):
        # Seeded by epoch, not by the global state: exact resume (see ArrayBatches).
        shuffle = kwargs.pop("shuffle", True)
        x, y = ArrayBatches(images, y, batch_size or 32, shuffle=shuffle, seed=model.seed, per_sample=per_sample), None
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
    every = [
        c.save_freq
        for c in callbacks
        if isinstance(c, (keras.callbacks.ModelCheckpoint, keras.callbacks.BackupAndRestore))
        and isinstance(getattr(c, "save_freq", None), int)
    ]
    if not any(isinstance(c, StopOnNaN) for c in callbacks):
        callbacks.insert(0, StopOnNaN(weights_every=min(every) if every else None))
    for c in callbacks:  # a user's guard checks the weights whenever a checkpoint saves, as ours does
        if isinstance(c, StopOnNaN) and c.weights_every is None and every:
            c.weights_every = min(every)
    guard = DataEpochs(x)
    callbacks.insert(0, guard)
    kwargs["callbacks"] = order_callbacks(callbacks)  # every finiteness guard, the user's too, before any checkpoint
    return x, y, batch_size, kwargs, guard


def before_training(model, x, y, batch_size, kwargs):
    """Calls the method's `before_training(x, y, batch_size, steps)` when `fit` starts an untrained model.

    `SSLModel.fit` calls it first, with `fit`'s own arguments; a method that
    needs a pass over the data before its first step defines the hook
    (DeepCluster-v2 fills its memory, the official `init_memory`). A resumed
    run (`initial_epoch`, or a model that has taken a step) skips it.

    Example:
        >>> from keras_ssl.engine.fit import before_training
        >>> class Warm(keras_ssl.SimCLR):
        ...     def before_training(self, x, y, batch_size, steps):
        ...         print("pass over", len(x), "images")
        >>> model = Warm(encoder, projection_dim=8, hidden_dim=16)
        >>> before_training(model, x_train, None, 16, {"epochs": 2})
        pass over 64 images
        >>> before_training(model, x_train, None, 16, {"epochs": 2, "initial_epoch": 1})
    """
    hook = getattr(model, "before_training", None)
    if callable(hook) and not kwargs.get("initial_epoch") and int(keras.ops.convert_to_numpy(model.step)) == 0:
        hook(x, y, batch_size, kwargs.get("steps_per_epoch"))


def data_pass(model, step, x, y=None, batch_size=None, steps=None, alternative=None):
    """Runs `step(inputs)` on every batch of `x`, as `fit` would batch it, without gradient or optimizer step.

    Keras's predict loop runs it (compiled as the model's predict step), so it
    reads any source `fit` reads and keeps the variables `step` assigns on
    every backend; each batch's inputs are what the training step gets (with
    indices or labels where the method declares them). `step` returns a tensor
    per batch, which is dropped.

    Args:
        model: an `SSLModel`.
        step: function of one batch's inputs.
        x, y, batch_size: as `fit`'s.
        steps: batches to read; defaults to the whole source.
        alternative: what else the user can do about a one-shot source, for the error message.

    Raises:
        ValueError: `x` is a generator or iterator, which the pass would leave empty for `fit`.

    Example:
        >>> from keras_ssl.engine.fit import data_pass
        >>> model = keras_ssl.SimCLR(encoder, projection_dim=8, hidden_dim=16)
        >>> model.seen = keras.Variable(0, dtype="int32", trainable=False)   # state the pass changes
        >>> def count(images):
        ...     model.seen.assign_add(keras.ops.shape(images)[0])
        ...     return images[:, 0, 0, :1]
        >>> data_pass(model, count, x_train, batch_size=16)
        >>> int(keras.ops.convert_to_numpy(model.seen))   # every full batch of the 64 images
        64
    """
    if hasattr(x, "__next__"):
        raise ValueError(
            f"{type(model).__name__}'s pass over the data before training got a generator or iterator, which is "
            "read once: training would then find it empty. Give a PyDataset, a list of batches, a tf.data.Dataset "
            f"or a torch DataLoader{', ' + alternative if alternative else ''}."
        )
    model._ensure_built()
    data, _, batch_size, _, _ = fit_arguments(model, x, y, batch_size, {"epochs": 1})
    model._data_pass, model.predict_function = step, None
    try:
        model.predict(data, batch_size=batch_size, steps=steps, verbose=0)
    finally:
        model._data_pass, model.predict_function = None, None


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


def save_atomically(save, filepath, overwrite=True, **kwargs):
    """Runs Keras's `save` or `save_weights` on a temporary file next to `filepath`, then renames it over it.

    Keras writes in place, so a write that fails (a full disk) would leave a
    broken file where the earlier one was, a user's `ModelCheckpoint`
    included; `SSLModel.save` and `save_weights` go through here instead
    (`rundir.write_atomically`). Left to Keras: file objects, remote and
    unzipped (directory) saves, sharded weights, `overwrite=False` on an
    existing file (Keras asks), and a file already written away from its
    final place (a `.tmp-` file or folder of `write_atomically` or of
    `checkpoints.BackupAndRestore`, whose caller names the final file).

    Args:
        save: `keras.Model.save` or `save_weights`, bound to the model.
        filepath: the file to write.
        overwrite, **kwargs: passed to `save`.

    Raises:
        rundir.WriteError: naming `filepath`; the earlier file there is unchanged.

    Example:
        >>> from keras_ssl.engine.fit import save_atomically
        >>> save_atomically(encoder.save_weights, "encoder.weights.h5")
        >>> os.path.exists("encoder.weights.h5"), [name for name in os.listdir(".") if name.startswith(".tmp-")]
        (True, [])
    """
    path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
    if (
        path is None
        or "://" in path
        or kwargs.get("zipped") is False
        or kwargs.get("max_shard_size")
        or (not overwrite and os.path.exists(path))
        or any(os.path.basename(p).startswith(".tmp-") for p in (path, os.path.dirname(os.path.abspath(path))))
    ):
        return save(filepath, overwrite=overwrite, **kwargs)
    rundir.write_atomically(path, lambda tmp: save(tmp, overwrite=True, **kwargs))
