"""Every use of Keras internals in keras_ssl, in one place.

Each helper names the Keras version it was written against (3.15.1) and the
gap it fills. `tests/test_keras_compat.py` checks each assumption directly,
so a Keras release that changes an internal fails there, loudly, and not
somewhere deep inside a training step.
"""

import contextlib

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
        >>> banks = [l for l in sublayers(model) if isinstance(l, MemoryBank)]
    """
    return list(layer._flatten_layers(include_self=True, recursive=True))


def seed_generators(layer):
    """The `keras.random.SeedGenerator`s under `layer`, each once.

    Keras 3.15 saves no SeedGenerator state in `.keras` files or
    `BackupAndRestore` checkpoints, so a resumed run would draw other
    augmentations than the uninterrupted run. Layers record their generators
    in `_seed_generators` when one is assigned as an attribute.

    Example:
        >>> states = [g.state for g in seed_generators(model)]
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

    Such a model can be cloned with `keras.models.clone_model`; a subclassed
    one must be rebuilt from its config. Keras 3.15 exposes no public test;
    functional models hold the graph in `_nodes_by_depth`.

    Example:
        >>> target = keras.models.clone_model(m) if is_functional(m) else ...
    """
    return isinstance(model, keras.Sequential) or hasattr(model, "_nodes_by_depth")


def built_input_shape(layer):
    """The input shape a built layer was built with, or None.

    Subclassed layers have no `input_shape`; Keras 3.15 records the
    arguments of `build` in `_build_shapes_dict`.

    Example:
        >>> clone.build(built_input_shape(layer))
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
        >>> config = portable_compile_config(super().get_compile_config())
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
        >>> with unsafe_deserialization():
        ...     copy = keras.models.clone_model(model_with_lambda)
    """
    return SafeModeScope(False)


def set_initial_epoch(model, epoch):
    """Makes the `fit` that is starting begin at `epoch` (None: as asked).

    Keras 3.15's own `BackupAndRestore` sets `model._initial_epoch` in
    `on_train_begin`, and `fit` reads it after that call. Keras never clears
    it, so a later `fit` on the same model would also skip epochs; our
    checkpoint callback sets it back to None when training ends.

    Example:
        >>> set_initial_epoch(self.model, 3)   # inside on_train_begin
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
        >>> skip_train_steps(self.model, 5)   # resumed after batch 5 of this epoch
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
        >>> restore_train_function(self.model)   # in on_train_end
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
        >>> if not jit_step_function(model, "train_function", model.train_step):
        ...     keras.Model.make_train_function(model)
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
        >>> with empty_epoch_error(guard):
        ...     keras.Model.fit(model, x, callbacks=[guard])
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
        >>> m = self.momentums[variable_index(self, variable)]
    """
    return optimizer._get_variable_index(variable)


def backup_weights_path(callback):
    """Where a Keras 3.15 `BackupAndRestore` keeps its own backup (its private `_weights_path`).

    Example:
        >>> os.path.exists(backup_weights_path(keras.callbacks.BackupAndRestore("ckpt")))
        False
    """
    return callback._weights_path
