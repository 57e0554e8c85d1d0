"""Multi-device contract: N devices give the loss and gradients of one device.

Each backend's run checks its own backend in a subprocess (the device count
must be set before the backend starts): JAX with 4 virtual CPU devices under
`DataParallel`, TensorFlow with 4 logical CPUs under `MirroredStrategy`.
PyTorch: one device per process (multi-process: tests/test_multiprocess_torch.py): asking for more devices must raise.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import BACKEND

from keras_ssl import distribute

NUM_DEVICES = 4
METHODS = ("simclr", "byol", "barlow_twins", "moco", "vicreg", "nnclr")

# Runs one SGD(lr=1) step on 1 and on N devices from the same weights and the
# same batch (identity augmenters, so the views are fixed), and prints the
# losses and weight updates (weights_before - weights_after = gradient).
WORKER = textwrap.dedent(
    """
    import importlib, json, os, sys
    N = int(sys.argv[1]); METHODS = sys.argv[2].split(",")
    backend = os.environ["KERAS_BACKEND"]
    if backend == "tensorflow":
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * N)
    import keras, numpy as np
    keras.utils.set_random_seed(0)  # the same initial weights in every run: not flaky
    if backend == "tensorflow":
        # Heads use BatchNorm, per replica on TF: drop it for an exact
        # comparison (synchronized BN mixed with the gather failed with a
        # collective-ordering error on CPU). JAX keeps BN: under
        # DataParallel its statistics are global.
        class NoBN(keras.layers.Layer):
            def __init__(self, **kwargs):
                super().__init__()
            def call(self, x, training=None):
                return x
            def compute_output_shape(self, shape):
                return shape
        import keras_ssl.layers.heads
        keras_ssl.layers.heads.BatchNormalization = NoBN
    from keras_ssl import distribute

    def encoder():
        return keras.Sequential([
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ])

    def make(name):
        from keras_ssl.layers import TwoViews

        ident = lambda: keras.layers.Identity()
        common = dict(seed=1)
        if name == "simclr":
            from keras_ssl.methods.simclr import SimCLR
            return SimCLR(encoder(), views=TwoViews(ident()), hidden_dim=16, projection_dim=8, **common)
        if name == "byol":
            from keras_ssl.methods.byol import BYOL
            return BYOL(encoder(), views=TwoViews(ident(), ident()), hidden_dim=16, projection_dim=8, **common)
        if name == "barlow_twins":
            from keras_ssl.methods.barlow_twins import BarlowTwins
            return BarlowTwins(encoder(), views=TwoViews(ident()), projection_dim=16, **common)
        if name == "moco":
            from keras_ssl.methods.moco_v2 import MoCoV2
            return MoCoV2(encoder(), queue_size=32, hidden_dim=16, projection_dim=8,
                          split_batch_norm=False, views=TwoViews(ident(), ident()), **common)
        if name == "vicreg":
            from keras_ssl.methods.vicreg import VICReg
            return VICReg(encoder(), views=TwoViews(ident()), projection_dim=16, **common)
        if name == "nnclr":
            from keras_ssl.methods.nnclr import NNCLR
            return NNCLR(encoder(), queue_size=32, hidden_dim=16, projection_dim=8,
                         views=TwoViews(ident(), ident()), **common)

    STRATEGY = distribute.mirrored_strategy(N) if backend == "tensorflow" else None

    def one_step(name, weights, devices):
        scope = None
        if devices > 1 and backend == "jax":
            distribute.data_parallel(devices)
        elif backend == "jax":
            keras.distribution.set_distribution(None)
        if devices > 1 and backend == "tensorflow":
            scope = STRATEGY.scope()  # one per process: two strategies' collectives clash
            scope.__enter__()
        model = make(name)
        model.compile(optimizer=keras.optimizers.SGD(1.0))
        model.build()
        if weights is not None:
            model.set_weights(weights)
        if scope is not None:
            scope.__exit__(None, None, None)
        before = model.get_weights()
        tb = [np.array(v.numpy() if hasattr(v, "numpy") else v) for v in model.trainable_variables]
        x = np.random.RandomState(0).rand(16, 8, 8, 3).astype("float32")
        loss = model.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0).history["loss"][0]
        ta = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
        # step state after the update: targets, queue rows, pointers, counters
        state = [np.asarray(keras.ops.convert_to_numpy(v), "float64") for v in model.non_trainable_variables]
        return before, float(loss), [b - a for b, a in zip(tb, ta)], int(keras.ops.convert_to_numpy(model.step)), state

    if METHODS == ["gather"]:
        # gather's backward: the sum over replicas of their upstream gradients,
        # sliced to the local rows. Replica r weights the gathered rows by
        # (r + 1) * c, so local row i gets sum_r (r + 1) * c[rank * B + i].
        strategy = STRATEGY
        c = tf.constant(np.arange(1.0, 2 * N + 1, dtype="float32").reshape(2 * N, 1))
        def step():
            ctx = tf.distribute.get_replica_context()
            r = ctx.replica_id_in_sync_group
            x = tf.ones((2, 1)) * tf.cast(r, tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = distribute.gather(x)
                loss = tf.reduce_sum(y * c * tf.cast(r + 1, tf.float32))
            # Nothing to gather (a method with no gathered outputs): returned as it is, no all-reduce.
            nothing = distribute.gather({})
            return tape.gradient(loss, x), y, tf.constant(distribute.num_replicas()), tf.constant(len(nothing))
        grads, y, n, nothing = strategy.run(tf.function(step))
        print("RESULTS" + json.dumps({
            "grads": [strategy.experimental_local_results(grads)[r].numpy().ravel().tolist() for r in range(N)],
            "y": strategy.experimental_local_results(y)[0].numpy().ravel().tolist(),
            "num_replicas": int(strategy.experimental_local_results(n)[0]),
            "nothing": int(strategy.experimental_local_results(nothing)[0]),
        }))
        sys.exit(0)
    results = {}
    for name in METHODS:
        try:
            importlib.import_module(f"keras_ssl.methods.{name}")
        except ImportError as e:
            results[name] = {"skip": f"keras_ssl.methods.{name} missing: {e}"}
            continue
        weights, loss1, grads1, step1, state1 = one_step(name, None, 1)
        _, lossn, gradsn, stepn, staten = one_step(name, weights, N)
        results[name] = {
            "loss1": loss1, "lossn": lossn, "steps": [step1, stepn],
            "grad_scale": max(float(np.abs(g).max()) for g in grads1),
            "grad_diff": max(float(np.abs(a - b).max()) for a, b in zip(grads1, gradsn)),
            "state_count": [len(state1), len(staten)],
            "state_diff": max([float(np.abs(a - b).max()) for a, b in zip(state1, staten)] or [0.0]),
        }

    print("RESULTS" + json.dumps(results))
    """
)


def _run_worker(tmp_path_factory, *args):
    script = tmp_path_factory.mktemp("distribute") / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=os.getcwd(), TF_CPP_MIN_LOG_LEVEL="2")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={NUM_DEVICES}"
    proc = subprocess.run(
        [sys.executable, str(script), str(NUM_DEVICES), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULTS")]
    assert proc.returncode == 0 and line, proc.stderr[-4000:]
    return json.loads(line[0][len("RESULTS") :])


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    if BACKEND == "torch":
        pytest.skip("PyTorch: one device per process (several processes: tests/test_multiprocess_torch.py)")
    return _run_worker(tmp_path_factory, ",".join(METHODS))


@pytest.mark.parametrize("method", METHODS)
def test_n_devices_equal_one_device(results, method):
    r = results[method]
    if "skip" in r:
        pytest.skip(r["skip"])
    assert r["steps"] == [1, 1]
    assert np.isfinite(r["loss1"]) and r["grad_scale"] > 1e-4  # a real gradient was compared
    np.testing.assert_allclose(r["lossn"], r["loss1"], atol=1e-5, rtol=1e-5)
    assert r["grad_diff"] <= 1e-5 * max(1.0, r["grad_scale"]), r
    # queues hold every replica's keys, in order; targets and counters agree
    assert r["state_count"][0] == r["state_count"][1] > 0
    assert r["state_diff"] <= 1e-5, r


@pytest.mark.skipif(BACKEND != "tensorflow", reason="cross-replica gather is TensorFlow's")
def test_tf_gather_order_and_gradient(tmp_path_factory):
    n = NUM_DEVICES
    g = _run_worker(tmp_path_factory, "gather")
    assert g["num_replicas"] == n and g["nothing"] == 0
    # replica r holds rows [r, r]: the gathered batch keeps replica order
    assert g["y"] == [float(r) for r in range(n) for _ in range(2)]
    c = np.arange(1.0, 2 * n + 1)
    total = n * (n + 1) / 2  # sum_r (r + 1)
    for r in range(n):
        np.testing.assert_allclose(g["grads"][r], total * c[2 * r : 2 * r + 2], rtol=1e-6)


def test_single_device_helpers_are_identity():
    import keras

    x = keras.ops.ones((3, 2))
    assert distribute.num_replicas() == 1
    assert distribute.gather(x) is x


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch only")
def test_torch_refuses_devices():
    with pytest.raises(NotImplementedError, match="one device"):
        distribute.data_parallel(2)
    with pytest.raises(NotImplementedError, match="one device"):
        distribute.mirrored_strategy(["cuda:0", "cuda:1"])
    assert distribute.initialize() is None  # no cluster in the environment: one process, nothing to join


@pytest.mark.skipif(BACKEND == "torch", reason="JAX/TensorFlow")
def test_wrong_backend_helper_raises():
    if BACKEND == "jax":
        with pytest.raises(NotImplementedError, match="TensorFlow"):
            distribute.mirrored_strategy()
        with pytest.raises(ValueError, match="devices"):
            distribute.data_parallel(0)
    else:
        with pytest.raises(NotImplementedError, match="JAX"):
            distribute.data_parallel()
        with pytest.raises(ValueError, match="devices"):
            distribute.mirrored_strategy(99)
