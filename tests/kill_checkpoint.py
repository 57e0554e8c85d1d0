"""Trains a small MoCo with `keras_ssl.callbacks.BackupAndRestore` and SIGKILLs itself at a write boundary.

Run as `python kill_checkpoint.py BACKUP_DIR BOUNDARY N`: the process is
killed (as a pre-empted job is) the N-th time the callback reaches
BOUNDARY; "torn" truncates the weights file being written, then kills.
`build` and `FIT` are shared with `test_checkpoints.py`.
"""

import os
import signal
import sys

import keras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import random_images, small_encoder

import keras_ssl

FIT = dict(batch_size=8, epochs=3, verbose=0)  # 5 steps an epoch; checkpoints every 2 steps
SAVE_FREQ = 2


def build():
    keras.utils.set_random_seed(11)
    model = keras_ssl.MoCo(small_encoder(), queue_size=16, hidden_dim=16, projection_dim=8, num_splits=2, seed=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def images():
    return random_images(40)


class KillAt(keras_ssl.callbacks.BackupAndRestore):
    def __init__(self, backup_dir, boundary, occurrence):
        super().__init__(backup_dir, save_freq=SAVE_FREQ)
        self.boundary, self.left = boundary, occurrence

    def _reached(self, boundary):
        if boundary != ("weights" if self.boundary == "torn" else self.boundary):
            return
        self.left -= 1
        if self.left:
            return
        if self.boundary == "torn":
            tmp = [n for n in os.listdir(self.backup_dir) if n.startswith(".tmp-")][0]
            path = os.path.join(self.backup_dir, tmp, "model.weights.h5")
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    backup_dir, boundary, occurrence = sys.argv[1], sys.argv[2], int(sys.argv[3])
    build().fit(images(), callbacks=[KillAt(backup_dir, boundary, occurrence)], **FIT)
    sys.exit(3)  # not killed: the test fails
