"""One process of tests/test_multiprocess_torch.py: rank 0 or 1 of a 2-process gloo run, or the reference.

    python tests/mp_torch_worker.py ROLE PORT OUT_DIR      (ROLE: 0, 1 or "reference")

Phase 1 (every role): SimCLR, BYOL, MoCo v2, SwAV and DINO train 3 steps each with `fit` on the
same 24 images (3 global batches of 8); rank r feeds rows [8s + 4r, 8s + 4r + 4) at step s, the
reference (one process, no process group) the 8 rows. The views are deterministic (identity and
a fixed affine map), the encoder and heads have no BatchNorm, so the two runs compute the same
function of the same global batch. Then "syncbn": SimCLR on an encoder with BatchNorm (Keras's
class and keras_ssl's), which the ranks synchronise (`layers.synchronize_batch_norm`) and the
reference runs as plain Keras on the global batch; and "localbn" (ranks only): the same without
the switch, per-process statistics, which must differ from the reference. Rank 1 builds its models from another global seed: `fit`
must copy rank 0's weights to it. Writes OUT_DIR/ROLE.npz: per method the running loss after
each step, the first step's gradients as the optimizer receives them, and the trainable and
non-trainable weights after the 3 steps.

Phase 2 (ranks only): a longer SimCLR run; rank 1 SIGKILLs itself after its second step (writing
the time first), and rank 0 must fail naming it: it writes the error and the time to OUT_DIR.
"""

import json
import os
import signal
import sys
import time

os.environ["KERAS_BACKEND"] = "torch"
import torch

torch.set_num_threads(1)  # three processes share the CI's two cores

import keras
import numpy as np

import keras_ssl
import keras_ssl.layers.heads
from keras_ssl.distribute import torch_processes

ROLE, PORT, OUT = sys.argv[1], int(sys.argv[2]), sys.argv[3]
RANK = None if ROLE == "reference" else int(ROLE)
GLOBAL_BATCH, WORLD, STEPS = 8, 2, 3
METHODS = ("simclr", "byol", "mocov2", "swav", "dino", "syncbn", "localbn")
RECORD = {}


class NoBatchNorm(keras.layers.Layer):
    """Identity in place of the heads' BatchNorm: statistics per process would differ from the global batch's."""

    def call(self, x, training=None):
        return x

    def compute_output_shape(self, shape):
        return shape


keras_ssl.layers.heads._batch_norm = lambda **kwargs: NoBatchNorm()


class Recorder(keras.optimizers.SGD):
    """SGD with momentum (not scale-invariant, as Adam is) that keeps the first gradients it applies."""

    def apply(self, grads, trainable_variables=None):
        if "grads" not in RECORD:
            RECORD["grads"] = [np.zeros(1) if g is None else keras.ops.convert_to_numpy(g).copy() for g in grads]
        return super().apply(grads, trainable_variables)


class Losses(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        RECORD.setdefault("loss", []).append(float(logs["loss"]))


def encoder():
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(8),
        ]
    )


def bn_encoder():
    # Keras's BatchNormalization (a user's own backbone) and keras_ssl's fused one; a low momentum
    # moves the moving statistics far in 3 steps.
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, strides=2, padding="same"),
            keras.layers.BatchNormalization(momentum=0.5),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(8),
            keras_ssl.layers.BatchNormalization(momentum=0.5),
        ]
    )


def views():
    return keras_ssl.views.TwoViews(keras.layers.Identity(), keras.layers.Rescaling(0.8, offset=0.1))


def make(name):
    common = dict(views=views(), seed=1)
    if name in ("syncbn", "localbn"):
        model = keras_ssl.SimCLR(bn_encoder(), hidden_dim=16, projection_dim=8, temperature=0.5, **common)
        # The reference stays plain Keras: one process, statistics of the whole global batch.
        return keras_ssl.layers.synchronize_batch_norm(model) if name == "syncbn" and RANK is not None else model
    if name == "simclr":
        return keras_ssl.SimCLR(encoder(), hidden_dim=16, projection_dim=8, temperature=0.5, **common)
    if name == "byol":
        return keras_ssl.BYOL(encoder(), hidden_dim=16, projection_dim=8, momentum=0.9, **common)
    if name == "mocov2":
        return keras_ssl.MoCoV2(
            encoder(), queue_size=10, hidden_dim=16, projection_dim=8, momentum=0.9, split_batch_norm=False, **common
        )
    if name == "swav":
        return keras_ssl.SwAV(
            encoder(),
            num_prototypes=6,
            projection_dim=8,
            hidden_dim=16,
            queue_size=16,
            freeze_prototypes_steps=1,
            **common,
        )
    return keras_ssl.DINO(
        encoder(), output_dim=12, hidden_dim=16, bottleneck_dim=8, momentum=0.9, freeze_last_layer_steps=0, **common
    )


def numpy(variables):
    return [keras.ops.convert_to_numpy(v).astype("float64") for v in variables]


def shard(x):
    if RANK is None:
        return x
    per = GLOBAL_BATCH // WORLD
    return np.concatenate([x[s * GLOBAL_BATCH + RANK * per :][:per] for s in range(len(x) // GLOBAL_BATCH)])


def train(name, x):
    RECORD.clear()
    keras.utils.set_random_seed(7 + (RANK or 0))  # rank 1 starts from other weights: `fit` must fix them
    model = make(name)
    # DINO's first gradients are ~1e4 (sharp teacher softmax over a tiny head): a smaller step keeps it finite.
    model.compile(optimizer=Recorder(learning_rate=1e-4 if name == "dino" else 0.1, momentum=0.9))
    batch_size = GLOBAL_BATCH if RANK is None else GLOBAL_BATCH // WORLD
    model.fit(shard(x), batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[Losses()])
    state = [w for w in model.non_trainable_weights if "seed_generator" not in w.path]
    return {
        "loss": np.array(RECORD["loss"]),
        "grads": RECORD["grads"],
        "weights": numpy(model.trainable_weights),
        "state": numpy(state),
        "state_paths": [w.path for w in state],
    }


def main():
    if RANK is not None:
        torch_processes.initialize(rank=RANK, world_size=WORLD, master_addr="127.0.0.1", master_port=PORT, timeout=120)
    x = np.random.default_rng(0).uniform(size=(STEPS * GLOBAL_BATCH, 8, 8, 3)).astype("float32")
    out = {"num_replicas": np.array(keras_ssl.distribute.num_replicas())}
    for name in METHODS:
        if name == "localbn" and RANK is None:
            continue  # compared with the reference's "syncbn"
        started = time.time()
        result = train(name, x)
        print(f"{name}: {time.time() - started:.1f} s", flush=True)
        for key, value in result.items():
            if isinstance(value, list):
                out[f"{name}/{key}/n"] = np.array(len(value))
                for i, v in enumerate(value):
                    out[f"{name}/{key}/{i}"] = np.asarray(v)
            else:
                out[f"{name}/{key}"] = value
    np.savez(os.path.join(OUT, f"{ROLE}.npz"), **out)
    if RANK is None:
        return
    # Phase 2: a process is lost mid-run.
    killer = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batch == 1 and die())
    try:
        model = make("simclr")
        model.compile(optimizer="sgd")
        model.fit(np.tile(x, (10, 1, 1, 1)), batch_size=4, epochs=1, verbose=0, callbacks=[killer] if RANK else [])
    except torch_processes.LostProcessError as error:
        with open(os.path.join(OUT, f"error_{RANK}.json"), "w") as f:
            json.dump({"message": str(error), "time": time.time()}, f)
        raise


def die():
    with open(os.path.join(OUT, f"killed_{RANK}.json"), "w") as f:
        json.dump({"time": time.time()}, f)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
