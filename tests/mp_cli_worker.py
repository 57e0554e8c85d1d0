"""A process of tests/test_cli_processes.py's killed launch: `keras-ssl ARGS`, one process of which is lost.

    python tests/mp_cli_worker.py KILL_INDEX pretrain ARGS...

The process whose KERAS_SSL_PROCESS_ID is KILL_INDEX SIGKILLs itself at the end of its first training
step after process 0 has published a checkpoint in --output, as a machine is lost mid-run; the other
processes run `keras-ssl` unchanged.
"""

import os
import signal
import sys

import keras

from keras_ssl import checkpoints, cli


def _kill_after_a_checkpoint(folder):
    batch_end = keras.callbacks.CallbackList.on_train_batch_end

    def on_train_batch_end(self, batch, logs=None):
        batch_end(self, batch, logs)
        if checkpoints.list_checkpoints(folder):
            os.kill(os.getpid(), signal.SIGKILL)

    keras.callbacks.CallbackList.on_train_batch_end = on_train_batch_end


if __name__ == "__main__":
    kill, argv = sys.argv[1], sys.argv[2:]
    if os.environ.get("KERAS_SSL_PROCESS_ID") == kill:
        _kill_after_a_checkpoint(os.path.join(cli.build_parser().parse_args(argv).output, "checkpoint"))
    sys.exit(cli.main(argv))
