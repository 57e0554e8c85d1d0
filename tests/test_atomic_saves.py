"""Every save through an `SSLModel` keeps the previous file when the write fails (issue 33, finding 5).

Keras's own writers write in place; `SSLModel.save` and `save_weights` write a temporary file next to
the target and rename it, so a full disk in a user's `keras.callbacks.ModelCheckpoint` leaves the
previous checkpoint loadable and raises one line naming the file. The reference for what the
checkpoint holds is a copy of the weights taken at the end of epoch 1.
"""

import errno
import os
import re

import keras
import numpy as np
import pytest
from conftest import BACKEND, KeepWeights, random_images, small_encoder

from keras_ssl import rundir
from keras_ssl.methods import SimCLR

ENOSPC_ON_CLOSE = "Can't close file (file write failed: No space left on device)"  # what h5py says


def _disk_full_after(writes, method, monkeypatch):
    """Keras's `method` writes `writes` files, then writes the first bytes of the next one and fails."""
    real, calls = getattr(keras.Model, method), []

    def save(self, path, *args, **kwargs):
        calls.append(os.fspath(path))
        if len(calls) <= writes:
            return real(self, path, *args, **kwargs)
        with open(path, "wb") as f:
            f.write(b"\x89HDF\r\n\x1a\n" if str(path).endswith(".h5") else b"PK\x03\x04")
        raise OSError(errno.ENOSPC, ENOSPC_ON_CLOSE)

    monkeypatch.setattr(keras.Model, method, save)
    return calls


def _model():
    model = SimCLR(small_encoder(), projection_dim=8, hidden_dim=16, seed=0)
    # Four steps: tracing TensorFlow's step costs more than running them eagerly (JAX's is cached by conftest).
    model.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=BACKEND == "tensorflow")
    return model


def _one_line_naming(path, error):
    assert re.fullmatch(
        rf"could not write {re.escape(path)}: No space left on device \(Can't close file \(.*\)\); "
        "any earlier file there is unchanged.",
        str(error),
    )
    assert error.errno == errno.ENOSPC


def test_a_model_checkpoint_whose_second_write_fails_leaves_the_first_loadable(tmp_path, monkeypatch):
    # The repro: a user's ModelCheckpoint in fit, the disk full at its second write (h5py's error).
    weights, kept = str(tmp_path / "last.weights.h5"), KeepWeights()
    calls = _disk_full_after(1, "save_weights", monkeypatch)
    model = _model()
    with pytest.raises(rundir.WriteError) as info:
        model.fit(
            random_images(16),
            epochs=2,
            batch_size=8,
            verbose=0,
            callbacks=[kept, keras.callbacks.ModelCheckpoint(weights, save_weights_only=True)],
        )
    _one_line_naming(weights, info.value)
    assert len(calls) == 2 and weights not in calls  # Keras wrote elsewhere, then the file was renamed
    assert os.listdir(tmp_path) == ["last.weights.h5"], "no temporary file left behind"
    monkeypatch.undo()
    restored = _model()
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(weights)
    for saved, expected in zip(restored.get_weights(), kept.weights[0], strict=True):  # epoch 1's, whole
        np.testing.assert_array_equal(saved, expected)

    # The whole model (.keras), its checkpoint driven as fit drives it: epoch 1's end saves, epoch 2's fails.
    whole = str(tmp_path / "last.keras")
    _disk_full_after(1, "save", monkeypatch)
    checkpoint = keras.callbacks.ModelCheckpoint(whole)
    checkpoint.set_model(model)
    checkpoint.on_train_begin()
    model.set_weights(kept.weights[0])
    checkpoint.on_epoch_end(0, {"loss": 1.0})
    model.set_weights(kept.weights[1])  # epoch 2's weights, which must not reach the file
    with pytest.raises(rundir.WriteError) as info:
        checkpoint.on_epoch_end(1, {"loss": 1.0})
    _one_line_naming(whole, info.value)
    assert sorted(os.listdir(tmp_path)) == ["last.keras", "last.weights.h5"]
    monkeypatch.undo()
    for saved, expected in zip(keras.saving.load_model(whole).get_weights(), kept.weights[0], strict=True):
        np.testing.assert_array_equal(saved, expected)


def test_a_save_inside_the_cli_run_directory_writer_names_the_file_once(tmp_path, monkeypatch):
    path, model = str(tmp_path / "model.keras"), _model()
    _disk_full_after(0, "save", monkeypatch)
    with pytest.raises(SystemExit) as info:
        rundir.save_model(model, path)  # its own temporary file, then the model's: one message, not two nested
    assert str(info.value) == (
        f"keras-ssl: could not write {path}: No space left on device ({ENOSPC_ON_CLOSE}); "
        "any earlier file there is unchanged."
    )
    assert os.listdir(tmp_path) == []
