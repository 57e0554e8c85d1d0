"""Runs `keras-ssl pretrain` and SIGKILLs itself at a write boundary, as a pre-empted job is killed.

`python kill_pretrain.py checkpoint:N ARGS...` dies right after the N-th
checkpoint is published; `publish:N` dies after moving the N-th file of
the run into place.
"""

import os
import signal
import sys

from keras_ssl import checkpoints, cli, rundir


def _kill_on(count):
    left = [count]

    def reached():
        left[0] -= 1
        if not left[0]:
            os.kill(os.getpid(), signal.SIGKILL)

    return reached


if __name__ == "__main__":
    where, count = sys.argv[1].split(":")
    reached = _kill_on(int(count))
    if where == "checkpoint":
        checkpoints.BackupAndRestore._reached = lambda self, boundary: reached() if boundary == "published" else None
    else:
        move = rundir._move
        rundir._move = lambda source, target: (move(source, target), reached())
    cli.main(sys.argv[2:])
    sys.exit(3)  # not killed: the test fails
