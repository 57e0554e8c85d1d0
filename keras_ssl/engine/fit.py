"""The engine's data policy for `fit` and `evaluate`: one validation path for every source, the
seeded batch order of arrays, and the callbacks the engine adds around the user's."""

import keras
import numpy as np

from keras_ssl import backend
from keras_ssl.checkpoints import BackupAndRestore
from keras_ssl.data import ArrayBatches, prepare_fit_data
from keras_ssl.data.sources import orders_itself
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
    return prepare_fit_data(
        x,
        y,
        batch_size,
        channels=model.image_shape[-1],
        value_range=model.value_range,
        min_size=model.image_size,
        check_batch=model.check_batch_size,
    )


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
        isinstance(x, np.ndarray)
        and (y is None or y.dtype.kind in "biuf")
        and not any(kwargs.get(k) for k in ("validation_split", "sample_weight", "class_weight"))
        and not backend.needs_array_input(model)
    ):
        # Seeded by epoch, not by the global state: exact resume (see ArrayBatches).
        x, y = ArrayBatches(x, y, batch_size or 32, shuffle=kwargs.pop("shuffle", True), seed=model.seed), None
        batch_size = None
    if orders_itself(x):
        kwargs["shuffle"] = False  # Keras would reshuffle the batches from Python's global `random`
    callbacks = [
        BackupAndRestore.like(c) if type(c) is keras.callbacks.BackupAndRestore else c
        for c in kwargs.pop("callbacks", None) or []
    ]
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
