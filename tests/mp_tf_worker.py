"""One process of tests/test_multiprocess_tf.py: trains SimCLR, BYOL, MoCo v2 and SwAV 3 steps each.

    python tests/mp_tf_worker.py OUT_DIR single   # the reference: one process, one device, the global batches
    python tests/mp_tf_worker.py OUT_DIR multi    # one worker of N (KERAS_SSL_COORDINATOR lists every worker)

Under `MultiWorkerMirroredStrategy` each replica runs its own slice of the batch: BatchNorm would
see per-replica statistics and the augmentations would draw per replica, so (unlike the JAX test)
the encoder and heads have no BatchNorm and the views are fixed (the image and its mirror image).
Each method starts from the same seed, takes one SGD step then two more, one `fit` call each, on
global batches of 8 rows of the same 24 images. Every worker passes the global batch and
TensorFlow's auto-sharding gives each worker its slice (`fit`'s NumPy path, as users call it). It
saves the losses, the trainable weights before and after step 1 and every weight after step 3 to
OUT_DIR/<mode>_<index>.npz. With KERAS_SSL_MP_LINGER=1 it then trains SimCLR until killed, printing
"STEP n" (the kill test). KERAS_SSL_MP_MISTAKE=no_gather turns the gather of the declared outputs
off (the test must then fail).
"""

import contextlib
import os
import sys
import time

import keras
import numpy as np
from mp_record import save_then_linger, train_and_record

import keras_ssl
import keras_ssl.layers.heads
from keras_ssl.backend import processes

OUT, MODE = sys.argv[1], sys.argv[2]
GLOBAL_BATCH, STEPS, LR = 8, 3, 0.1
METHODS = ("simclr", "byol", "moco", "swav")

# Created first: the strategy starts this worker's server and joins the others.
strategy = processes.multi_worker_strategy(timeout=60) if MODE == "multi" else None
index, count = processes.process_index(), processes.process_count()


class NoBatchNorm(keras.layers.Layer):
    """Stands in for the heads' BatchNormalization: per-replica statistics differ from the global ones."""

    def __init__(self, *args, **kwargs):
        super().__init__(name=kwargs.get("name"))

    def call(self, x, training=None):
        return x

    def compute_output_shape(self, shape):
        return shape


keras_ssl.layers.heads.BatchNormalization = NoBatchNorm


class Mirror(keras.layers.Layer):
    def call(self, x, training=None):
        return keras.ops.flip(x, axis=2)


def encoder():
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
        ]
    )


def make(name):
    views = keras_ssl.views.TwoViews(keras.layers.Identity(), Mirror())
    common = dict(seed=1, hidden_dim=16, projection_dim=8, views=views)
    if name == "simclr":
        return keras_ssl.SimCLR(encoder(), **common)
    if name == "byol":
        return keras_ssl.BYOL(encoder(), **common)
    if name == "moco":
        return keras_ssl.MoCoV2(encoder(), queue_size=16, split_batch_norm=False, **common)
    return keras_ssl.SwAV(encoder(), num_prototypes=8, queue_size=16, **common)


rng = np.random.default_rng(0)
images = np.clip(rng.integers(0, 256, (24, 1, 1, 3)) + rng.integers(-40, 40, (24, 16, 16, 3)), 0, 255)
# float32: Keras 3.15 averages the first batch across workers to build the model, and TensorFlow's
# collectives refuse uint8 (InvalidArgumentError: CollectiveReduceV2 ... uint8)
images = (images / 255.0).astype("float32")


def batches(step):
    """Global step `step`'s rows: every worker passes them all and TensorFlow gives each its own slice."""
    return images[step * GLOBAL_BATCH : (step + 1) * GLOBAL_BATCH]


if os.environ.get("KERAS_SSL_MP_MISTAKE") == "no_gather":
    keras_ssl.backend.gather = lambda x: x  # each replica's loss on its own rows only


results, models = {}, {}
started = time.time()
for name in METHODS:
    keras.utils.set_random_seed(0)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = models[name] = make(name)
        model.compile(optimizer=keras.optimizers.SGD(LR))
        model.build()
    train_and_record(results, name, model, batches, GLOBAL_BATCH, STEPS)

save_then_linger(
    OUT,
    MODE,
    index,
    results,
    count,
    started,
    lambda: models["simclr"].fit(batches(0), batch_size=GLOBAL_BATCH, shuffle=False, verbose=0),
    "mp_tf_worker",
)
