"""Checkpoints that a kill cannot break, and exact resume, also from the middle of an epoch.

Keras 3.15's `BackupAndRestore` writes the weights and then the epoch
number as two files over the previous ones: a kill between or during the
writes leaves a backup that cannot be read, or weights of one epoch with the
counter of another. Its step checkpoints restart the epoch from its first
batch, training again on batches already seen.

Here every checkpoint is a directory, `ckpt-<epoch>-<batch>`, written under
a temporary name and renamed when complete (a rename is atomic), so the
newest complete directory is always whole. It holds the weights (model,
optimizer, momentum targets, queues, seed states) and `state.json` (the
position, the epoch logs so far and the running epoch metrics). Resume
skips the batches of the interrupted epoch already trained on.

With several processes every process restores the same checkpoint, and
only process 0 (`is_chief`) writes or removes any.
"""

import json
import os
import shutil
import warnings

import keras
import numpy as np

from keras_ssl import keras_compat
from keras_ssl.backend import processes, torch_processes
from keras_ssl.rundir import WriteError, _flush, remove_dir

WEIGHTS = "model.weights.h5"
STATE = "state.json"
_PREFIX = "ckpt-"


def list_checkpoints(backup_dir):
    """The complete checkpoint directories in `backup_dir`, newest first.

    Args:
        backup_dir: a `BackupAndRestore` directory.

    Example:
        >>> from keras_ssl.checkpoints import BackupAndRestore, list_checkpoints
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> backup = BackupAndRestore("backups", double_checkpoint=True, delete_checkpoint=False)
        >>> history = model.fit(np.ones((32, 4)), np.ones((32, 1)), epochs=3, callbacks=[backup], verbose=0)
        >>> list_checkpoints("backups")  # the newest and, with double_checkpoint, the one before
        ['backups/ckpt-000003-000000000', 'backups/ckpt-000002-000000000']
        >>> newest = list_checkpoints("backups")[0]
    """
    if not os.path.isdir(backup_dir):
        return []
    found = []
    for name in os.listdir(backup_dir):
        path = os.path.join(backup_dir, name)
        if name.startswith(_PREFIX) and os.path.isfile(os.path.join(path, STATE)):
            found.append(path)
    return sorted(found, reverse=True)  # zero-padded positions sort as numbers


def read_state(checkpoint):
    """The `state.json` of a checkpoint directory: `epoch`, `batch`, `logs`, `metrics`.

    Example:
        >>> from keras_ssl.checkpoints import BackupAndRestore, list_checkpoints, read_state
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> backup = BackupAndRestore("backup_dir", delete_checkpoint=False)
        >>> history = model.fit(np.ones((32, 4)), np.ones((32, 1)), epochs=3, callbacks=[backup], verbose=0)
        >>> state = read_state(list_checkpoints("backup_dir")[0])
        >>> state["epoch"], state["batch"], len(state["logs"])
        (3, 0, 3)
    """
    with open(os.path.join(checkpoint, STATE)) as f:
        return json.load(f)


@keras.saving.register_keras_serializable(package="keras_ssl")
class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore`, safe to kill at any moment and exact mid-epoch.

    Same arguments as Keras's. A kill at any point of a write leaves the
    previous checkpoint or the new one, never a mix; resuming restores the
    weights, optimizer, momentum targets, queues, seed states, epoch logs
    and running metrics, and skips the batches of the interrupted epoch
    that were trained on, so the run ends as the uninterrupted one does
    (when the data order depends on the epoch alone, as for NumPy arrays and
    `ImageFiles` in `SSLModel.fit`). `SSLModel.fit` uses this class in
    place of Keras's. With an integer `save_freq` it also saves at each
    epoch end. A backup directory in Keras's own format is still restored.
    A write that fails (a full disk) raises `rundir.WriteError`, one line
    naming the file, and leaves the previous checkpoint as it was. With
    several processes each restores the same checkpoint and only process 0
    writes (`distribute.is_chief()`).

    Args:
        backup_dir: directory of the checkpoints (used by nothing else).
        save_freq: "epoch", or a number of steps between checkpoints.
        double_checkpoint: keep the previous checkpoint too, and fall back
            to it when the newest cannot be read (a damaged disk).
        delete_checkpoint: remove `backup_dir` when training completes.

    Attributes:
        epoch_logs: the logs of every epoch so far, restored ones included.
        resumed_from: `(epoch, batch)` the last `fit` resumed from, or None.

    Example:
        >>> from keras_ssl.checkpoints import BackupAndRestore
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])  # any Keras model
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> x, y = np.ones((32, 4)), np.ones((32, 1))
        >>> backup = BackupAndRestore("ckpt", save_freq=2, delete_checkpoint=False)
        >>> history = model.fit(x, y, epochs=3, batch_size=8, callbacks=[backup], verbose=0)
        >>> history = model.fit(x, y, epochs=5, batch_size=8, callbacks=[backup], verbose=0)  # rerun: resumes
        >>> backup.resumed_from, len(backup.epoch_logs), len(history.history["loss"])
        ((3, 0), 5, 2)
    """

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True):
        super().__init__(
            backup_dir, save_freq=save_freq, double_checkpoint=double_checkpoint, delete_checkpoint=delete_checkpoint
        )
        self.epoch_logs, self.resumed_from = [], None
        self._skip, self._metrics, self._epoch, self._batches = 0, None, 0, 0

    @classmethod
    def like(cls, callback):
        """This class with the settings of a `keras.callbacks.BackupAndRestore`.

        Example:
            >>> from keras_ssl.checkpoints import BackupAndRestore
            >>> ours = BackupAndRestore.like(keras.callbacks.BackupAndRestore("ckpt", save_freq=100))
            >>> type(ours).__module__, ours.backup_dir, ours.save_freq
            ('keras_ssl.checkpoints', 'ckpt', 100)
        """
        return cls(
            callback.backup_dir,
            save_freq=callback.save_freq,
            double_checkpoint=callback.double_checkpoint,
            delete_checkpoint=callback.delete_checkpoint,
        )

    def get_config(self):
        return {
            "backup_dir": self.backup_dir,
            "save_freq": self.save_freq,
            "double_checkpoint": self.double_checkpoint,
            "delete_checkpoint": self.delete_checkpoint,
        }

    # ------------------------------------------------------------ restore
    def on_train_begin(self, logs=None):
        model = self.model
        keras_compat.set_initial_epoch(model, None)
        self.epoch_logs, self.resumed_from, self._skip, self._metrics = [], None, 0, None
        self._epoch, self._batches = 0, 0
        chief = processes.is_chief()
        if chief:
            _remove_leftovers(self.backup_dir)
        found = list_checkpoints(self.backup_dir)
        if not found:
            if os.path.exists(keras_compat.backup_weights_path(self)):  # a backup in Keras's own format
                super().on_train_begin(logs)
            return
        errors = []
        for path in found:
            try:
                self._restore(model, path)
                break
            except (OSError, ValueError, KeyError) as e:
                errors.append(f"{os.path.basename(path)}: {e}")
                warnings.warn(f"BackupAndRestore: could not restore {path} ({e}); trying an older one.")
        else:
            raise RuntimeError(
                f"no checkpoint in {self.backup_dir} could be restored: {'; '.join(errors)}. "
                "Delete the directory to start over."
            )
        for stale in found[: found.index(path)] if chief else ():  # unreadable and newer: would shadow the good one
            _discard(stale)

    def _restore(self, model, path):
        state = read_state(path)
        if not model.built:
            raise ValueError("BackupAndRestore needs a built model: call it on a batch before fit().")
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(path, WEIGHTS))
        # PyTorch processes draw their own augmentations: the rank goes back into the restored seeds.
        torch_processes.start_equal(model.weights, keras_compat.seed_generators(model))
        epoch, batch = int(state["epoch"]), int(state["batch"])
        keras_compat.set_initial_epoch(model, epoch)
        self.epoch_logs = list(state.get("logs", []))
        self._skip, self._metrics = batch, state.get("metrics")
        self.resumed_from = (epoch, batch)
        self._epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._batches = epoch, 0
        if not self._skip:
            return
        model = self.model
        for metric in model.metrics:  # the running means of the interrupted epoch
            for variable, value in zip(metric.variables, (self._metrics or {}).get(metric.name, [])):
                variable.assign(np.asarray(value, dtype=variable.dtype))
        keras_compat.skip_train_steps(model, self._skip // (getattr(model, "steps_per_execution", 1) or 1))
        self._batches, self._skip, self._metrics = self._skip, 0, None

    # --------------------------------------------------------------- save
    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 <= self._batches:  # a skipped batch of a resumed epoch
            return
        self._batches = batch + 1
        last = self.params.get("steps") if self.params else None
        # Counted from the epoch start, as StopOnNaN checks the weights, so no unchecked step is saved.
        if isinstance(self.save_freq, int) and self._batches % self.save_freq == 0 and self._batches != last:
            self._save(self._epoch, self._batches)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_logs.append({k: _plain(v) for k, v in (logs or {}).items()})
        self._epoch, self._batches = epoch + 1, 0
        if self.save_freq == "epoch" or isinstance(self.save_freq, int):
            self._save(epoch + 1, 0)

    def _save(self, epoch, batch):
        if processes.is_chief():  # every process holds the same weights: process 0 writes them
            with processes.alone():
                self._write(epoch, batch)

    def _write(self, epoch, batch):
        model = self.model  # on JAX this brings the step's state back to the variables
        name = f"{_PREFIX}{epoch:06d}-{batch:09d}"
        final, tmp = os.path.join(self.backup_dir, name), os.path.join(self.backup_dir, ".tmp-" + name)
        state = {"epoch": epoch, "batch": batch, "logs": self.epoch_logs, "format": 1}
        if batch:
            state["metrics"] = {
                m.name: [keras.ops.convert_to_numpy(v).tolist() for v in m.variables] for m in model.metrics
            }
        text, writing = json.dumps(state), WEIGHTS
        try:
            os.makedirs(self.backup_dir, exist_ok=True)
            if os.path.exists(tmp):
                shutil.rmtree(tmp)
            os.mkdir(tmp)
            self._reached("begin")
            model.save_weights(os.path.join(tmp, WEIGHTS))
            _flush(os.path.join(tmp, WEIGHTS))  # a full disk may answer only here
            self._reached("weights")
            writing = STATE
            with open(os.path.join(tmp, STATE), "w") as f:
                f.write(text)
            _flush(os.path.join(tmp, STATE))
            _fsync(tmp)
        except OSError as e:  # a full disk: one line naming the file, and the previous checkpoint kept
            shutil.rmtree(tmp, ignore_errors=True)
            previous = list_checkpoints(self.backup_dir)
            kept = (
                f"the previous checkpoint {previous[0]} is unchanged (rerun to resume from it)"
                if previous
                else "no earlier checkpoint exists"
            )
            raise WriteError(os.path.join(final, writing), e, kept) from None
        self._reached("state")
        if os.path.exists(final):  # the same position again (a fit repeated with more epochs)
            _discard(final)
        os.rename(tmp, final)
        _fsync(self.backup_dir)
        self._reached("published")
        for old in list_checkpoints(self.backup_dir)[2 if self.double_checkpoint else 1 :]:
            _discard(old)
        self._reached("pruned")

    def _reached(self, boundary):
        """Called at each write boundary ("begin", "weights", "state", "published", "pruned").

        A no-op; tests kill the process here to check that any kill leaves
        one whole checkpoint.
        """

    def on_train_end(self, logs=None):
        model = self.model
        keras_compat.restore_train_function(model)
        keras_compat.set_initial_epoch(model, None)
        if self.delete_checkpoint and processes.is_chief() and os.path.exists(self.backup_dir):
            shutil.rmtree(self.backup_dir)


def _plain(value):
    """A log value as JSON: a float, a list of floats, or its text."""
    try:
        array = np.asarray(keras.ops.convert_to_numpy(value), dtype="float64")
    except (TypeError, ValueError):
        return str(value)
    return float(array) if array.ndim == 0 else array.tolist()


def _discard(path):
    """Removes a checkpoint directory so that no kill leaves a part of it under its name."""
    remove_dir(path)


def _remove_leftovers(backup_dir):
    """Removes what a killed write left: `.tmp-*` and `.trash-*` directories."""
    if not os.path.isdir(backup_dir):
        return
    for name in os.listdir(backup_dir):
        if name.startswith((".tmp-", ".trash-")):
            shutil.rmtree(os.path.join(backup_dir, name), ignore_errors=True)


def _fsync(path):
    """Flushes a file or directory to disk, where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
