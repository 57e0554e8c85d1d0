"""One process of tests/test_multiprocess_jax.py: trains SimCLR, BYOL, MoCo v2 and SwAV 3 steps each.

    python tests/mp_jax_worker.py OUT_DIR single   # the reference: one process, one device, the global batches
    python tests/mp_jax_worker.py OUT_DIR multi    # one of N (KERAS_SSL_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)

Each method starts from the same seed (so the same weights and augmentation seeds), takes one SGD
step, then two more, one `fit` call each, on global batches of 8 rows of the same 24 images; each
process feeds its rows of every global batch (`processes.process_shard`). It saves the losses, the
trainable weights before and after step 1 and every weight after step 3 to OUT_DIR/<mode>_<index>.npz.
With KERAS_SSL_MP_LINGER=1 it then trains SimCLR until killed, printing "STEP n" (the kill test).
KERAS_SSL_MP_MISTAKE=same_shard makes every process feed process 0's rows (the test must then fail).
"""

import os
import sys
import time

import keras
import numpy as np
from mp_record import save_then_linger, train_and_record

import keras_ssl
from keras_ssl.backend import processes

OUT, MODE = sys.argv[1], sys.argv[2]
GLOBAL_BATCH, STEPS, LR = 8, 3, 0.1
METHODS = ("simclr", "byol", "moco", "swav")

if MODE == "multi":
    processes.initialize(timeout=60, heartbeat_timeout=int(os.environ.get("KERAS_SSL_MP_HEARTBEAT", "10")))
    # every process's devices: the global mesh; each process feeds its own rows, so no auto-sharding
    keras_ssl.distribute.data_parallel().auto_shard_dataset = False
index, count = processes.process_index(), processes.process_count()


def encoder():
    # Any image size (SwAV's local crops); BatchNorm is global under JAX's DataParallel, so it stays.
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((None, None, 3)),
            layers.Conv2D(8, 3, strides=2, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(16, 3, strides=2, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.GlobalAveragePooling2D(),
        ]
    )


def make(name):
    common = dict(input_shape=(16, 16, 3), seed=1, hidden_dim=16, projection_dim=8)
    if name == "simclr":
        return keras_ssl.SimCLR(encoder(), **common)
    if name == "byol":
        return keras_ssl.BYOL(encoder(), **common)
    if name == "moco":
        return keras_ssl.MoCoV2(encoder(), queue_size=16, num_splits=2, **common)
    return keras_ssl.SwAV(encoder(), num_prototypes=8, queue_size=16, **common)


rng = np.random.default_rng(0)
images = np.clip(rng.integers(0, 256, (24, 1, 1, 3)) + rng.integers(-40, 40, (24, 16, 16, 3)), 0, 255)
images = images.astype("uint8")
if MODE == "multi":
    shard = 0 if os.environ.get("KERAS_SSL_MP_MISTAKE") == "same_shard" else None
    rows, batch = processes.process_shard(images, GLOBAL_BATCH, index=shard)
else:
    rows, batch = images, GLOBAL_BATCH

results, models = {}, {}
started = time.time()
for name in METHODS:
    keras.utils.set_random_seed(0)
    model = models[name] = make(name)
    model.compile(optimizer=keras.optimizers.SGD(LR))
    model.build()
    train_and_record(results, name, model, lambda step: rows[step * batch : (step + 1) * batch], batch, STEPS)
    print(f"{name}: {time.time() - started:.1f} s, cpu {time.process_time():.1f} s", flush=True)

save_then_linger(
    OUT,
    MODE,
    index,
    results,
    count,
    started,
    lambda: models["simclr"].fit(rows[:batch], batch_size=batch, shuffle=False, verbose=0),
    "mp_jax_worker",
)
