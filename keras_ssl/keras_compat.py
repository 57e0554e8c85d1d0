"""Every use of Keras internals in keras_ssl, in one place.

Each helper names the Keras version it was written against (3.15.1) and the
gap it fills. `tests/test_keras_compat.py` checks each assumption directly,
so a Keras release that changes an internal fails there, loudly, and not
somewhere deep inside a training step.
"""

import contextlib
import sys

import keras
from keras.src.saving.serialization_lib import SafeModeScope

from keras_ssl import backend

KERAS_VERSION_CHECKED = "3.15.1"


def sublayers(layer):
    """`layer` and every layer under it, each once, depth first.

    Keras 3.15 has no public recursive layer walk for a subclassed model
    (`Model.layers` lists direct children only); `_flatten_layers` is what
    Keras itself uses to collect weights and metrics.

    Example:
        >>> from keras_ssl.keras_compat import sublayers
        >>> model = keras_ssl.MoCo(encoder, queue_size=64, projection_dim=8)
        >>> banks = [l for l in sublayers(model) if isinstance(l, keras_ssl.layers.MemoryBank)]
        >>> len(banks), banks[0].size
        (1, 64)
        >>> sum(isinstance(l, keras.layers.Dense) for l in sublayers(model))   # inside the two projectors
        4
    """
    return list(layer._flatten_layers(include_self=True, recursive=True))


def seed_generators(layer):
    """The `keras.random.SeedGenerator`s under `layer`, each once.

    Keras 3.15 saves no SeedGenerator state in `.keras` files or
    `BackupAndRestore` checkpoints, so a resumed run would draw other
    augmentations than the uninterrupted run. Layers record their generators
    in `_seed_generators` when one is assigned as an attribute.

    Example:
        >>> from keras_ssl.keras_compat import seed_generators
        >>> views = keras_ssl.views.TwoViews(keras_ssl.views.RandomResizedCrop(8, seed=0))
        >>> states = [g.state for g in seed_generators(views)]
        >>> len(states), tuple(states[0].shape)
        (1, (2,))
    """
    seen, found = set(), []
    for sub in sublayers(layer):
        for generator in getattr(sub, "_seed_generators", ()):
            if id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
    return found


def is_functional(model):
    """Whether `model` is a graph of layers (Functional or Sequential).

    Such a model can be cloned with `keras.models.clone_model`; a subclassed one must be rebuilt from its
    config. Keras 3.15 exposes no public test; functional models hold the graph in `_nodes_by_depth`.

    Example:
        >>> from keras_ssl.keras_compat import is_functional
        >>> is_functional(encoder), is_functional(keras_ssl.SimCLR(encoder))
        (True, False)
    """
    return isinstance(model, keras.Sequential) or hasattr(model, "_nodes_by_depth")


def built_input_shape(layer):
    """The input shape a built layer was built with, or None.

    Subclassed layers have no `input_shape`; Keras 3.15 records the arguments of `build` in `_build_shapes_dict`.

    Example:
        >>> from keras_ssl.keras_compat import built_input_shape
        >>> layer = keras_ssl.layers.ProjectionHead(hidden_dim=8, output_dim=4)
        >>> layer.build((None, 16))
        >>> built_input_shape(layer), built_input_shape(encoder)
        ((None, 16), (None, 16, 16, 3))
    """
    shape = getattr(layer, "input_shape", None) if isinstance(layer, keras.Model) else None
    if shape is not None:
        return shape
    shapes = getattr(layer, "_build_shapes_dict", None)
    return next(iter(shapes.values())) if shapes else None


def portable_compile_config(config):
    """A compile config whose optimizer loads on every backend.

    Keras 3.15 records a torch-backend optimizer's module as
    `keras.src.backend.torch.optimizers.*`; loading such a model on
    TensorFlow or JAX builds a torch optimizer that fails in `fit`. The
    optimizer is pointed at the portable `keras.optimizers` instead.

    Example:
        >>> from keras_ssl.keras_compat import portable_compile_config
        >>> encoder.compile(optimizer="adam", loss="mse")
        >>> config = portable_compile_config(encoder.get_compile_config())
        >>> config["optimizer"]["module"]
        'keras.optimizers'
        >>> saved_on_torch = {"optimizer": {"module": "keras.src.backend.torch.optimizers.torch_adam",
        ...     "class_name": "Adam", "config": {}, "registered_name": "Adam"}}
        >>> portable_compile_config(saved_on_torch)["optimizer"]["module"]
        'keras.optimizers'
    """
    optimizer = config.get("optimizer") if config else None
    if isinstance(optimizer, dict) and ".backend." in str(optimizer.get("module", "")):
        optimizer["module"] = "keras.optimizers"
        optimizer["registered_name"] = None
    return config


def unsafe_deserialization():
    """A scope in which `from_config` may rebuild `Lambda` layers.

    Copying a model that is already in memory (a momentum target, a
    fine-tuning copy) runs no code from a file, so Keras's safe mode, which
    guards loading files, does not apply. Keras 3.15 offers only the global,
    permanent `keras.config.enable_unsafe_deserialization()`;
    `SafeModeScope` restores the previous setting on exit.

    Example:
        >>> from keras_ssl.keras_compat import unsafe_deserialization
        >>> model_with_lambda = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: 2 * x)])
        >>> with unsafe_deserialization():
        ...     copy = keras.models.clone_model(model_with_lambda)
        >>> ops.convert_to_numpy(copy(ops.ones((1, 4)))).tolist()
        [[2.0, 2.0, 2.0, 2.0]]
        >>> keras.models.clone_model(model_with_lambda)   # outside the scope: Keras's safe mode
        Traceback (most recent call last):
        ...
        ValueError: Requested the deserialization of a `Lambda` layer whose `function` is a Python lambda. ...
    """
    return SafeModeScope(False)


def set_initial_epoch(model, epoch):
    """Makes the `fit` that is starting begin at `epoch` (None: as asked).

    Keras 3.15's own `BackupAndRestore` sets `model._initial_epoch` in
    `on_train_begin`, and `fit` reads it after that call. Keras never clears
    it, so a later `fit` on the same model would also skip epochs; our
    checkpoint callback sets it back to None when training ends.

    Example:
        >>> from keras_ssl.keras_compat import set_initial_epoch
        >>> class StartAt(keras.callbacks.Callback):
        ...     def on_train_begin(self, logs=None):
        ...         set_initial_epoch(self.model, 2)   # inside on_train_begin
        ...     def on_train_end(self, logs=None):
        ...         set_initial_epoch(self.model, None)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> history = model.fit(np.ones((8, 4)), np.ones((8, 1)), epochs=3, verbose=0, callbacks=[StartAt()])
        >>> history.epoch   # epochs 0 and 1 were skipped
        [2]
    """
    model._initial_epoch = epoch


def skip_train_steps(model, count):
    """The next `count` steps of the running `fit` read their batch and do not train.

    A run resumed from a checkpoint written in the middle of an epoch must
    not train again on the batches before it; reading them keeps the data
    in step. Keras 3.15 has no such option: `fit` calls
    `model.train_function` once per step, with the TensorFlow iterator, the
    JAX `(state, iterator)` or the PyTorch batches; the function is replaced
    for `count` calls and then put back. Call it from `on_epoch_begin`.

    Args:
        model: the model being fitted (its train function is made).
        count: calls to skip (steps divided by `steps_per_execution`).

    Example:
        >>> from keras_ssl.keras_compat import restore_train_function, skip_train_steps
        >>> class Resume(keras.callbacks.Callback):
        ...     def on_train_begin(self, logs=None):
        ...         skip_train_steps(self.model, 3)   # resumed after batch 3 of this epoch
        ...     def on_train_end(self, logs=None):
        ...         restore_train_function(self.model)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> history = model.fit(np.ones((8, 4)), np.ones((8, 1)), batch_size=2, verbose=0, callbacks=[Resume()])
        >>> int(model.optimizer.iterations)   # 4 batches read, the last one trained
        1
    """
    original = getattr(model, "_keras_ssl_train_function", None) or model.train_function
    if count <= 0:
        return
    left = [int(count)]

    def skip(*args):
        left[0] -= 1
        if left[0] <= 0:
            restore_train_function(model)
        return backend.skipped_train_step(model, args)

    model._keras_ssl_train_function = original
    model.train_function = skip


def restore_train_function(model):
    """Undoes `skip_train_steps` (also when `fit` ends before the steps were skipped).

    Example:
        >>> from keras_ssl.keras_compat import restore_train_function, skip_train_steps
        >>> encoder.compile(optimizer="sgd", loss="mse")
        >>> encoder.make_train_function()
        >>> original = encoder.train_function
        >>> skip_train_steps(encoder, 2)
        >>> replaced = encoder.train_function is not original
        >>> restore_train_function(encoder)   # in on_train_end
        >>> replaced, encoder.train_function is original
        (True, True)
    """
    original = getattr(model, "_keras_ssl_train_function", None)
    if original is not None:
        model.train_function = original
        model._keras_ssl_train_function = None


def jit_step_function(model, attribute, step, force=False):
    """Sets `model.<attribute>` to Keras's JAX step function jitted with `backend.cpu_jit()`.

    Keras 3.15's JAX trainer jits its step as `jax.jit(step,
    donate_argnums=0)` and wraps it with the private `_make_function`; this
    does the same with XLA's CPU compiler options, the only difference.

    Returns:
        False where it does not apply (other backends, eager, no jit, NNX,
        a distribution, or a Keras without `_make_function`): the caller
        then takes Keras's own `make_*_function`.

    Example:
        >>> from keras_ssl.keras_compat import jit_step_function
        >>> encoder.compile(optimizer="sgd", loss="mse")   # jit_compile="auto": XLA on JAX
        >>> if not jit_step_function(encoder, "train_function", encoder.train_step):
        ...     keras.Model.make_train_function(encoder)
        >>> jit_step_function(encoder, "train_function", encoder.train_step)   # JAX on CPU: it applies
        True
    """
    if model.run_eagerly or not model.jit_compile or not hasattr(model, "_make_function"):
        return False
    if getattr(keras.config, "is_nnx_enabled", lambda: False)():
        return False
    jit = backend.cpu_jit()
    if jit is None:
        return False
    if getattr(model, attribute) is None or force:
        setattr(model, attribute, model._make_function(jit(step, donate_argnums=0)))
    return True


@contextlib.contextmanager
def empty_epoch_error(guard):
    """Turns Keras 3.15's `UnboundLocalError` for an epoch without steps into `guard`'s error.

    Keras 3.15's JAX `fit` reads the logs of a step that never ran when an
    epoch yields no batch; `guard` (an `engine.callbacks.DataEpochs`) knows
    which epoch it was and says so.

    Example:
        >>> from keras_ssl.keras_compat import empty_epoch_error
        >>> guard = keras_ssl.callbacks.DataEpochs()
        >>> with empty_epoch_error(guard):   # what Keras raises when an epoch ran no step
        ...     raise UnboundLocalError("cannot access local variable 'logs'")
        Traceback (most recent call last):
        ...
        ValueError: epoch 1 ran no training step: ...
    """
    try:
        yield
    except UnboundLocalError:
        if guard.steps == 0:
            raise guard.empty_error(guard.epoch) from None
        raise


def variable_index(optimizer, variable):
    """The slot of `variable` in an optimizer's per-variable state lists (`momentums`, ...).

    Keras 3.15's own optimizers index their slots with the private
    `Optimizer._get_variable_index`; a custom optimizer (LARS) does the same.

    Example:
        >>> from keras_ssl.keras_compat import variable_index
        >>> optimizer = keras.optimizers.SGD(momentum=0.9)
        >>> dense = keras.layers.Dense(2)
        >>> dense.build((None, 3))
        >>> optimizer.build(dense.trainable_variables)
        >>> variable_index(optimizer, dense.bias)
        1
        >>> m = optimizer.momentums[variable_index(optimizer, dense.kernel)]
        >>> tuple(m.shape)
        (3, 2)
    """
    return optimizer._get_variable_index(variable)


def backup_weights_path(callback):
    """Where a Keras 3.15 `BackupAndRestore` keeps its own backup (its private `_weights_path`).

    Example:
        >>> from keras_ssl.keras_compat import backup_weights_path
        >>> path = backup_weights_path(keras.callbacks.BackupAndRestore("ckpt"))
        >>> os.path.basename(path), os.path.exists(path)   # written during fit, deleted when it ends
        ('latest.weights.h5', False)
    """
    return callback._weights_path


def mean_logs_over_workers():
    """Lets Keras's TensorFlow `fit` run under `MultiWorkerMirroredStrategy` (tensorflow#72388).

    Keras 3.15's `reduce_per_replica` averages each scalar log with
    `strategy.reduce("MEAN", v, axis=0)`, which fails on a scalar across
    workers ("Invalid reduction dimension 0"); averaging across the workers
    only (`axis=None`) is what it means. Other strategies keep Keras's code.
    Does nothing unless Keras's TensorFlow trainer is loaded; idempotent.

    Example:
        >>> from keras_ssl.keras_compat import mean_logs_over_workers
        >>> mean_logs_over_workers()   # any backend: a no-op off TensorFlow
    """
    trainer = sys.modules.get("keras.src.backend.tensorflow.trainer")
    if trainer is None or getattr(trainer.reduce_per_replica, "keras_ssl", False):
        return
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return keras.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.keras_ssl = True
    trainer.reduce_per_replica = reduce_per_replica


_SAME_BATCHES = {"_MapDataset", "_ParallelMapDataset", "_PrefetchDataset", "_OptionsDataset", "CacheDataset"}
_SAME_BATCHES |= {"_ShuffleDataset", "_RepeatDataset"}
_INFINITE = -1  # tf.data.INFINITE_CARDINALITY; -2 is unknown


def smallest_batch(dataset):
    """The fewest images in a batch of a `tf.data.Dataset`, found without reading one; None where unknown.

    TensorFlow 2.21 does not expose `batch`'s arguments, and reading the last batch runs the pipeline before
    it. The walk passes the steps that keep each batch whole (map, prefetch, shuffle...: `_input_dataset`) down
    to a `batch` (`_batch_size`, `_drop_remainder`) whose input has a known length, and stops at any other.
    tests/test_short_batches_tfdata.py checks it on real pipelines.

    Example:
        >>> from keras_ssl.keras_compat import smallest_batch
        >>> class Nine:  # a source of 9 images
        ...     cardinality = lambda self: 9
        >>> class _BatchDataset:  # what `.batch(4)` holds
        ...     _input_dataset, _batch_size, _drop_remainder = Nine(), 4, False
        >>> smallest_batch(_BatchDataset())
        1
    """
    while type(dataset).__name__ in _SAME_BATCHES:
        dataset = dataset._input_dataset
    if type(dataset).__name__ not in ("_BatchDataset", "_ParallelBatchDataset", "_PaddedBatchDataset"):
        return None
    size, total = int(dataset._batch_size), int(dataset._input_dataset.cardinality())
    if bool(dataset._drop_remainder) or total == _INFINITE:
        return size
    return None if total < 0 else total % size or size
