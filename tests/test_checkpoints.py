"""Checkpoints a kill cannot break, exact resume mid-epoch, and data that changes under fit.

References are uninterrupted runs of the same model; kills are real SIGKILLs
of a subprocess at each write boundary of a checkpoint.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import CrashAt, KeepWeights
from kill_checkpoint import FIT, SAVE_FREQ, build, images

import keras_ssl
from keras_ssl.checkpoints import list_checkpoints, read_state
from keras_ssl.data import ArrayBatches


def _assert_same_variables(a, b):
    for u, v in zip(a.variables, b.variables):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(u), keras.ops.convert_to_numpy(v), atol=1e-6, err_msg=u.path
        )


@pytest.fixture(scope="module")
def reference():
    model = build()
    history = model.fit(images(), **FIT).history
    return model, history


@pytest.mark.parametrize("save_freq, crash", [(SAVE_FREQ, (1, 2)), (SAVE_FREQ, (0, 1)), ("epoch", (1, 3))])
def test_resume_mid_epoch_with_shuffled_arrays_is_exact(reference, tmp_path, save_freq, crash):
    ref, ref_history = reference
    backup = lambda: keras.callbacks.BackupAndRestore(str(tmp_path), save_freq=save_freq)
    with pytest.raises(RuntimeError, match="simulated"):
        build().fit(images(), callbacks=[backup(), CrashAt(*crash)], **FIT)
    # Keras's own BackupAndRestore was replaced by keras_ssl's, whose checkpoints are directories.
    state = read_state(list_checkpoints(str(tmp_path))[0])
    saved_after = crash[1] + 1 - (crash[1] + 1) % SAVE_FREQ if save_freq != "epoch" else 0
    assert (state["epoch"], state["batch"]) == (crash[0], saved_after)
    callback = keras_ssl.callbacks.BackupAndRestore(str(tmp_path), save_freq=save_freq)
    resumed = build()
    history = resumed.fit(images(), callbacks=[callback], **FIT)
    assert callback.resumed_from == (crash[0], saved_after)
    assert history.epoch == list(range(crash[0], 3))
    _assert_same_variables(ref, resumed)
    # The interrupted epoch's mean loss includes the steps before the kill (running metrics restored).
    np.testing.assert_allclose(history.history["loss"], ref_history["loss"][crash[0] :], rtol=1e-5)
    np.testing.assert_allclose([e["loss"] for e in callback.epoch_logs], ref_history["loss"], rtol=1e-5)
    assert not os.path.exists(tmp_path), "a completed run deletes its checkpoints (delete_checkpoint=True)"


# The three states a kill can leave on disk: a half-written checkpoint under its temporary name
# ("torn": weights cut in half, as a kill inside the write leaves them; a kill at "begin" or
# "weights" leaves less of the same), a complete one not yet renamed ("state"), and a new one
# published before the old is removed ("published"; after "pruned" it is an ordinary checkpoint).
@pytest.mark.parametrize("boundary", ["torn", "state", "published"])
def test_a_kill_at_any_write_boundary_leaves_one_whole_checkpoint(reference, tmp_path, boundary):
    here = os.path.dirname(os.path.abspath(__file__))
    # The fourth checkpoint (epoch 1, after batch 2); the third is (epoch 1, batch 0).
    done = subprocess.run(
        [sys.executable, os.path.join(here, "kill_checkpoint.py"), str(tmp_path), boundary, "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    found = list_checkpoints(str(tmp_path))
    assert len(found) in (1, 2)
    newest = read_state(found[0])
    expected = (1, 2) if boundary in ("published", "pruned") else (1, 0)
    assert (newest["epoch"], newest["batch"]) == expected
    callback = keras_ssl.callbacks.BackupAndRestore(str(tmp_path), save_freq=SAVE_FREQ)
    resumed = build()
    resumed.fit(images(), callbacks=[callback], **FIT)
    assert callback.resumed_from == expected
    _assert_same_variables(reference[0], resumed)


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    fit = dict(FIT, epochs=2)
    keep = dict(double_checkpoint=True, delete_checkpoint=False)
    build().fit(images(), callbacks=[keras_ssl.callbacks.BackupAndRestore(str(tmp_path), **keep)], **fit)
    newest, previous = list_checkpoints(str(tmp_path))
    assert (read_state(newest)["epoch"], read_state(previous)["epoch"]) == (2, 1)
    with open(os.path.join(newest, "model.weights.h5"), "r+b") as f:  # a damaged disk
        f.truncate(100)
    callback = keras_ssl.callbacks.BackupAndRestore(str(tmp_path), **keep)
    with pytest.warns(UserWarning, match="could not restore"):
        history = build().fit(images(), callbacks=[callback], **FIT)
    assert callback.resumed_from == (1, 0) and history.epoch == [1, 2]


def test_a_later_fit_is_not_shortened_by_a_restored_epoch(tmp_path):
    model = build()
    with pytest.raises(RuntimeError, match="simulated"):
        model.fit(images(), callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path)), CrashAt(1, 0)], **FIT)
    model.fit(images(), callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path))], **FIT)
    # Keras's own callback leaves model._initial_epoch set, so this fit would run no epoch.
    assert model.fit(images(), **dict(FIT, epochs=1)).epoch == [0]


def test_array_batches_order_depends_on_seed_and_epoch_only():
    x = np.arange(40)[:, None, None, None].astype("uint8") * np.ones((1, 2, 2, 3), "uint8")
    first, again = ArrayBatches(x, batch_size=8, seed=5), ArrayBatches(x, batch_size=8, seed=5)
    again.set_epoch(3)
    first.set_epoch(3)
    order = np.concatenate([first[i][0][:, 0, 0, 0] for i in range(first.num_batches)])
    np.testing.assert_array_equal(order, np.concatenate([again[i][0][:, 0, 0, 0] for i in range(5)]))
    assert sorted(order.tolist()) == list(range(40))
    first.set_epoch(4)
    assert not np.array_equal(order, np.concatenate([first[i][0][:, 0, 0, 0] for i in range(5)]))
    with pytest.raises(IndexError):
        first[5]


class _EmptiedAfterOneEpoch(keras.utils.PyDataset):
    def __init__(self, x):
        super().__init__()
        self.x, self.epochs = x, 0

    def __len__(self):
        return 0 if self.epochs else len(self.x) // 8

    def __getitem__(self, i):
        return self.x[i * 8 : (i + 1) * 8]

    def on_epoch_end(self):
        self.epochs += 1


def test_a_pydataset_emptied_by_on_epoch_end_is_an_error_not_a_silent_fit():
    model = build()
    with pytest.raises(ValueError, match="epoch 1 ran no training step.*on_epoch_end once before"):
        model.fit(_EmptiedAfterOneEpoch(images()), epochs=2, verbose=0)


def test_a_generator_with_several_epochs_is_refused_before_any_step():
    x = images()
    model = build()
    with pytest.raises(ValueError, match="generator or iterator, which is read once"):
        model.fit((x[i : i + 8] for i in range(0, 40, 8)), epochs=3, verbose=0)
    assert int(model.step) == 0
    endless = (x[i % 5 * 8 : (i % 5 + 1) * 8] for i in range(10**9))
    assert model.fit(endless, epochs=2, steps_per_epoch=3, verbose=0).epoch == [0, 1]
    assert int(model.step) == 6


class _Shrinking(keras.utils.PyDataset):
    def __init__(self, x):
        super().__init__()
        self.x, self.count = x, 5

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        if i >= self.count:
            raise IndexError(i)
        return self.x[i * 8 : (i + 1) * 8]


class _ShrinkAfterFirstEpoch(keras.callbacks.Callback):
    def __init__(self, data):
        super().__init__()
        self.data = data

    def on_epoch_end(self, epoch, logs=None):
        self.data.count = 2


def test_an_epoch_that_runs_short_is_named_in_a_warning():
    data = _Shrinking(images())
    with pytest.warns(UserWarning, match="epoch 2 ran 2 of 5 steps"):
        build().fit(data, epochs=2, verbose=0, callbacks=[_ShrinkAfterFirstEpoch(data)])


# ---------------------------------------------------------------- a full disk
ENOSPC_ON_CLOSE = "Can't close file (file write failed: No space left on device)"  # what h5py says


def _dense():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def test_a_full_disk_during_a_checkpoint_is_one_line_naming_it_and_keeps_the_previous(tmp_path, monkeypatch):
    import errno

    real, calls = keras.Model.save_weights, []

    def disk_full_on_second(self, path, *args, **kwargs):  # the first save fits, the second fills the disk
        calls.append(path)
        if len(calls) == 1:
            return real(self, path, *args, **kwargs)
        with open(path, "wb") as f:
            f.write(b"\x89HDF\r\n\x1a\n")  # the first bytes of the file, then the disk is full
        raise OSError(errno.ENOSPC, ENOSPC_ON_CLOSE)

    monkeypatch.setattr(keras.Model, "save_weights", disk_full_on_second)
    backup_dir, kept = str(tmp_path / "backup"), KeepWeights()
    x, y = np.random.default_rng(0).normal(size=(16, 4)), np.ones((16, 1))
    backup = keras_ssl.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False)
    with pytest.raises(OSError) as info:
        _dense().fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[kept, backup])
    message, first = str(info.value), os.path.join(backup_dir, "ckpt-000001-000000000")
    assert "\n" not in message and info.value.errno == errno.ENOSPC
    assert message.startswith(
        f"could not write {os.path.join(backup_dir, 'ckpt-000002-000000000', 'model.weights.h5')}"
    )
    assert "No space left on device" in message and f"previous checkpoint {first} is unchanged" in message
    assert list_checkpoints(backup_dir) == [first] and os.listdir(backup_dir) == [os.path.basename(first)]
    monkeypatch.undo()
    restored = _dense()
    restored.optimizer.build(restored.trainable_variables)  # so the saved optimizer state loads too
    restored.load_weights(os.path.join(first, "model.weights.h5"))
    for saved, expected in zip(restored.get_weights(), kept.weights[0]):  # epoch 1's weights, whole
        np.testing.assert_array_equal(saved, expected)


def test_a_full_disk_keeps_the_earlier_run_files_and_names_them(tmp_path, monkeypatch):
    import errno
    import json
    import re

    from keras_ssl import rundir

    history, encoder = str(tmp_path / "history.json"), str(tmp_path / "encoder.keras")
    rundir.write_json(history, {"loss": [1.0]})
    before = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    rundir.save_model(before, encoder)

    def full(fd):  # delayed allocation: the disk answers only when the data is flushed
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", full)
    with pytest.raises(
        SystemExit, match=f"^keras-ssl: could not write {re.escape(history)}: No space left on device; "
    ):
        rundir.write_json(history, {"loss": [2.0, 3.0]})
    monkeypatch.undo()

    class HalfSaved:
        def save(self, path):  # writes part of the file, then the disk is full
            with open(path, "wb") as f:
                f.write(b"PK\x03\x04")
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(
        SystemExit, match=f"^keras-ssl: could not write {re.escape(encoder)}: No space left on device"
    ) as info:
        rundir.save_model(HalfSaved(), encoder)
    assert "\n" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["encoder.keras", "history.json"], "no temporary file left behind"
    with open(history) as f:
        assert json.load(f) == {"loss": [1.0]}
    after = keras.saving.load_model(encoder)
    for a, b in zip(after.get_weights(), before.get_weights()):
        np.testing.assert_array_equal(a, b)
