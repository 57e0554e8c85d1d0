"""The engine's own callbacks, which `SSLModel.fit` adds: the momentum schedule's length, the
finiteness guard that runs before any checkpoint (`order_callbacks` puts it there), and the data's epoch."""

import warnings

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="keras_ssl")
class MomentumScheduler(keras.callbacks.Callback):
    """Tells the model how many optimizer steps the `fit` call will take.

    The model computes its EMA momentum inside the compiled step from its own
    step counter (`SSLModel.current_momentum`), so the schedule is exact with
    `steps_per_execution > 1` and after resuming (`initial_epoch`, or
    `BackupAndRestore`, which restores the step counter). This callback owns
    the schedule: it sets the run length, and optionally the end points.
    `SSLModel.fit` adds one when none is given. When `fit` cannot know its
    length (a generator or dataset of unknown size, no `steps_per_epoch`),
    it warns once that the momentum stays at its start value.

    Args:
        momentum: momentum at step 0 (default: the model's).
        momentum_end: momentum at the last step (default: the model's).
        total_steps: run length; defaults to `epochs * steps_per_epoch` of `fit`.

    Example:
        >>> model = keras_ssl.BYOL(encoder, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer="adam")
        >>> schedule = keras_ssl.callbacks.MomentumScheduler(momentum=0.99)
        >>> history = model.fit(x_small, epochs=1, batch_size=8, callbacks=[schedule], verbose=0)
        >>> model.momentum, model.momentum_end, int(model.total_steps)   # 16 images: 2 steps
        (0.99, 1.0, 2)
    """

    def __init__(self, momentum=None, momentum_end=None, total_steps=None):
        super().__init__()
        self.momentum, self.momentum_end, self.total_steps = momentum, momentum_end, total_steps

    def on_train_begin(self, logs=None):
        model = self.model
        if self.momentum is not None or self.momentum_end is not None:
            if model.momentum is None:
                raise ValueError(f"{type(model).__name__} has no momentum schedule to set.")
            model.set_momentum_schedule(
                model.momentum if self.momentum is None else self.momentum,
                model.momentum_end if self.momentum_end is None else self.momentum_end,
            )
        total = self.total_steps
        if total is None:
            epochs, steps = self.params.get("epochs"), self.params.get("steps")
            total = epochs * steps if epochs and steps else 0
            if not total and getattr(model, "momentum", None) not in (None, model.momentum_end):
                warnings.warn(
                    f"fit cannot tell how many steps this run takes (data of unknown length), so "
                    f"the EMA momentum stays at its start value {model.momentum:g} instead of "
                    f"following its schedule to {model.momentum_end:g}. Pass steps_per_epoch= "
                    "to fit, or callbacks=[keras_ssl.callbacks.MomentumScheduler(total_steps=N)].",
                    stacklevel=2,
                )
        model.total_steps.assign(int(total))

    def get_config(self):
        return {"momentum": self.momentum, "momentum_end": self.momentum_end, "total_steps": self.total_steps}


@keras.saving.register_keras_serializable(package="keras_ssl")
class StopOnNaN(keras.callbacks.Callback):
    """Stops `fit` at the first non-finite loss or broken weights, before any checkpoint.

    Like `keras.callbacks.TerminateOnNaN`, but it raises `FloatingPointError`
    instead of finishing the epoch: finishing would run the epoch-end
    callbacks, and `ModelCheckpoint` or `BackupAndRestore` would overwrite
    the last good checkpoint. A step can also leave the loss it reported
    finite while its update makes the weights, optimizer state, momentum
    targets or queues NaN or huge (a learning-rate spike); so every variable
    of the model and its optimizer is checked at each epoch end and every
    `weights_every` steps, when checkpoints are written. `SSLModel.fit`
    adds one when none is given, with `weights_every` set to the smallest
    step frequency of its checkpoint callbacks, and moves every guard ahead
    of the first checkpoint callback (`order_callbacks`).

    With `divergence=F`, training has diverged when the norm of the
    trainable weights grows more than F times from one check to the next;
    the first check compares with the norm before the first step (the
    initial weights, or those a resumed run restored). As checks are where
    checkpoints are written, no checkpoint holds weights F times larger in
    norm than the checkpoint before it or the starting weights. Steady
    growth spread over many checks (weights without weight decay grow over
    a long run) is not divergence; it is caught by the loss or `max_abs`.

    Args:
        weights_every: also check the variables every this many steps
            (None: at epoch ends only).
        max_abs: the model's variables (weights, normalisation statistics,
            momentum targets, queues) larger than this in magnitude count as
            diverged. Trained weights stay far below 1e12, which leaves room
            for the moving variances of unscaled inputs.
        max_abs_optimizer: the same for the optimizer's state, apart: Adam's
            second moment is the squared gradient, so a sound run with
            gradients of 1e6 (a loss summed over many terms) holds 1e12
            there. 1e30 (gradients of 1e15) still stops before the square
            overflows float32 (gradients of 1.8e19).
        divergence: optional factor F: stop when the loss grows beyond F
            times its first epoch's mean, or the weight norm F times between
            two checks, as above (100: two orders of magnitude). None: off.

    Example:
        >>> model = keras_ssl.SimCLR(encoder, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer="adam")
        >>> guard = keras_ssl.callbacks.StopOnNaN(divergence=100)
        >>> backup = keras.callbacks.BackupAndRestore("ckpt")
        >>> history = model.fit(x_small, epochs=1, batch_size=8, callbacks=[guard, backup], verbose=0)
        >>> guard.on_train_batch_end(0, {"loss": float("nan")})   # what a NaN step meets
        Traceback (most recent call last):
        ...
        FloatingPointError: the loss became nan at epoch 1, batch 1; non-finite terms: none besides the loss. ...
    """

    def __init__(self, weights_every=None, max_abs=1e12, max_abs_optimizer=1e30, divergence=None):
        super().__init__()
        self.weights_every = int(weights_every) if weights_every else None
        self.max_abs, self.max_abs_optimizer = float(max_abs), float(max_abs_optimizer)
        self.divergence = float(divergence) if divergence else None
        self._loss_scale = self._norm = self._since = None

    def on_train_begin(self, logs=None):
        self._loss_scale = self._norm = self._since = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.divergence and self._norm is None:
            # The first step's start: after any restore of on_train_begin, before the first update.
            self._norm, self._since = self._weight_norm(), "before the first step"

    def on_train_batch_end(self, batch, logs=None):
        values = {k: _scalar(v) for k, v in (logs or {}).items()}
        where = f"epoch {getattr(self, 'epoch', 0) + 1}, batch {batch + 1}"
        if "loss" in values and not np.isfinite(values["loss"]):
            bad = [f"{k}={v}" for k, v in values.items() if k != "loss" and not np.isfinite(v)]
            self._stop(
                f"the loss became {values['loss']} at {where}; non-finite terms: "
                f"{', '.join(bad) or 'none besides the loss'}"
            )
        scale = self._loss_scale
        if self.divergence and scale and "loss" in values and abs(values["loss"]) > self.divergence * scale:
            self._stop(
                f"the loss jumped to {values['loss']:.4g} at {where}, more than {self.divergence:g} "
                f"times its first epoch's size {scale:.4g} (divergence)"
            )
        if self.weights_every and (batch + 1) % self.weights_every == 0:
            self._check_variables(where)

    def on_epoch_end(self, epoch, logs=None):
        self._check_variables(f"the end of epoch {epoch + 1}")
        if self._loss_scale is None and logs and "loss" in logs:
            self._loss_scale = max(abs(_scalar(logs["loss"])), 1e-6)

    def _check_variables(self, where):
        optimizer = getattr(self.model, "optimizer", None)
        groups = [("weight", self.model.variables, self.max_abs, "max_abs")]
        if optimizer is not None:
            groups.append(("optimizer variable", optimizer.variables, self.max_abs_optimizer, "max_abs_optimizer"))
        for kind, variables, limit, name in groups:
            for v in variables:
                value = keras.ops.convert_to_numpy(v)
                if not np.issubdtype(value.dtype, np.floating) or not value.size:
                    continue
                finite = bool(np.all(np.isfinite(value)))
                if finite and np.abs(value).max() <= limit:
                    continue
                what = "non-finite" if not finite else f"larger than {name}={limit:g} ({np.abs(value).max():.3g})"
                self._stop(f"{kind} {v.path} became {what} at {where} while the loss stayed finite", kind)
        if self.divergence:
            norm = self._weight_norm()
            if self._norm and norm > self.divergence * self._norm:
                self._stop(
                    f"the norm of the trainable weights jumped from {self._norm:.4g} ({self._since}) to "
                    f"{norm:.4g} by {where}, more than divergence={self.divergence:g} times"
                )
            self._norm, self._since = norm, f"at {where}"

    def _weight_norm(self):
        squares = (
            np.sum(np.square(keras.ops.convert_to_numpy(w), dtype="float64")) for w in self.model.trainable_variables
        )
        return float(np.sqrt(sum(squares)))

    def _stop(self, what, kind="weight"):
        self.model.stop_training = True
        if kind == "optimizer variable":
            advice = (
                "the gradients are huge (Adam's second moment is their square): clip them (clipnorm=), "
                "rescale the loss, or raise max_abs_optimizer if the weights are sound"
            )
        else:
            advice = "lower the learning rate or add warm-up"
        raise FloatingPointError(f"{what}. Training stopped before any checkpoint saved this state; {advice}.")

    def get_config(self):
        return {
            "weights_every": self.weights_every,
            "max_abs": self.max_abs,
            "max_abs_optimizer": self.max_abs_optimizer,
            "divergence": self.divergence,
        }


@keras.saving.register_keras_serializable(package="keras_ssl")
class DataEpochs(keras.callbacks.Callback):
    """Tells the data its epoch, and stops at an epoch in which no step ran.

    At each epoch start it calls the source's `set_epoch(epoch)` (or its
    sampler's, as for a torch `DistributedSampler`), so a source that
    orders itself by epoch (`data.ArrayBatches`, `data.ImageFiles`) gives
    a resumed run the batches the uninterrupted run had. An epoch that ran
    no step (a generator read out by the first epoch, a `PyDataset` whose
    length became 0) raises instead of ending quietly with the epochs and
    steps reported differing from what ran. `SSLModel.fit` puts one first
    in the callback list.

    Args:
        source: what `fit` reads (None: only the empty-epoch check).

    Example:
        >>> batches = keras_ssl.data.ArrayBatches(x_train, batch_size=16, seed=0)
        >>> callback = keras_ssl.callbacks.DataEpochs(batches)  # what SSLModel.fit(batches) adds
        >>> callback.on_epoch_begin(2)
        >>> batches.epoch
        2
        >>> callback.on_epoch_end(2)   # no step ran in this epoch
        Traceback (most recent call last):
        ...
        ValueError: epoch 3 ran no training step: the data (ArrayBatches) yielded no batches. ...
    """

    def __init__(self, source=None):
        super().__init__()
        self.source, self.epoch, self.steps, self.first_steps = source, 0, 0, None

    def on_train_begin(self, logs=None):
        self.first_steps = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.steps = epoch, 0
        for owner in (self.source, getattr(self.source, "sampler", None)):
            set_epoch = getattr(owner, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
                break

    def on_train_batch_end(self, batch, logs=None):
        self.steps = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        expected = (self.params or {}).get("steps") or self.first_steps
        self.first_steps = self.first_steps or self.steps
        if self.steps and expected and self.steps < expected:
            warnings.warn(
                f"epoch {epoch + 1} ran {self.steps} of {expected} steps: the data "
                f"({type(self.source).__name__}) ran out early.",
                stacklevel=2,
            )
        if not self.steps:
            raise self.empty_error(epoch)

    def empty_error(self, epoch):
        """The error for an epoch without steps (also raised by `SSLModel.fit` where Keras fails first)."""
        return ValueError(
            f"epoch {epoch + 1} ran no training step: the data ({type(self.source).__name__}) yielded no "
            "batches. A PyDataset emptied by its on_epoch_end is empty from the start (Keras calls "
            "on_epoch_end once before the first epoch). The epochs that did run are in model.history."
        )

    def get_config(self):
        return {}


# What `order_callbacks` moves, and ahead of what: a guard must see the weights before anything saves them.
GUARDS = (StopOnNaN, keras.callbacks.TerminateOnNaN)
CHECKPOINTERS = (keras.callbacks.ModelCheckpoint, keras.callbacks.BackupAndRestore)


def order_callbacks(callbacks):
    """The callbacks with every finiteness guard ahead of the first checkpointing callback.

    Keras runs callbacks in list order, so a `StopOnNaN` placed after a
    `ModelCheckpoint` or `BackupAndRestore` (keras_ssl's too) checks the
    weights only after they were saved: diverged weights replace the last
    good checkpoint. The guards (`StopOnNaN`, `keras.callbacks.TerminateOnNaN`)
    found after the first checkpointing callback move to just before it;
    everything else keeps its order. `SSLModel.fit` applies it to its
    callbacks.

    Args:
        callbacks: a list of Keras callbacks (left unchanged).

    Returns:
        A new list of the same callbacks.

    Example:
        >>> from keras_ssl.callbacks import StopOnNaN, order_callbacks
        >>> log = keras.callbacks.CSVLogger("log.csv")
        >>> checkpoint = keras.callbacks.ModelCheckpoint("last.weights.h5", save_weights_only=True)
        >>> [type(c).__name__ for c in order_callbacks([log, checkpoint, StopOnNaN()])]
        ['CSVLogger', 'StopOnNaN', 'ModelCheckpoint']
    """
    callbacks = list(callbacks)
    first = next((i for i, c in enumerate(callbacks) if isinstance(c, CHECKPOINTERS)), len(callbacks))
    late = [c for c in callbacks[first:] if isinstance(c, GUARDS)]
    rest = [c for c in callbacks[first:] if not isinstance(c, GUARDS)]
    return callbacks[:first] + late + rest


def _scalar(value):
    try:
        return float(keras.ops.convert_to_numpy(value))
    except (TypeError, ValueError):
        return 0.0
