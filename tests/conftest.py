"""Test configuration: the backend comes from KERAS_BACKEND (default: jax)."""

import gc
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests compile many tiny steps once each: XLA's LLVM optimisation costs more
# than it saves there (a third of JAX's suite time on 2 cores, measured).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
).strip()

import keras
import numpy as np
import pytest

from keras_ssl.text import Tokenizer, cifar10_captions

BACKEND = keras.backend.backend()

if BACKEND == "jax":
    import tempfile

    import jax

    # Many tests compile the same tiny step (a model and the copy loaded from its file, the same
    # makers in several files): XLA's persistent cache compiles each distinct program once per run,
    # shared by the xdist workers. Measured: a loaded model's first fit 11.3 s -> 2.2 s.
    jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "keras_ssl_tests_jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def clear_session():
    """`keras.backend.clear_session()` whose garbage collection scans only what the last test made.

    Keras's own collection scans every live object, the imported backends' hundreds of thousands
    with them: 0.3-0.7 s a test, 40 % of PyTorch's suite time (measured). What survives a
    collection here is frozen (`gc.freeze`), so the next one skips it.
    """
    keras.backend.clear_session(free_memory=False)
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield
    clear_session()


def data_dir():
    """Where the shared .npz datasets are (KERAS_SSL_DATA_DIR), or None."""
    d = os.environ.get("KERAS_SSL_DATA_DIR")
    return d if d and os.path.isdir(d) else None


def small_encoder(input_shape=(16, 16, 3), width=8):
    """A tiny conv encoder built from plain Keras layers (fast on every backend)."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(width, 3, strides=2, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(2 * width, 3, strides=2, padding="same"),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.GlobalAveragePooling2D(),
        ]
    )


CAPTIONS = cifar10_captions(np.arange(16) % 10, seed=0)


def tiny_text_model(cls, encoder=None, **kw):
    """A tiny image-text method (`CLIP`, `SigLIP`, `SLIP`) on 16-px images and `CAPTIONS`' vocabulary."""
    kw.setdefault("tokenizer", Tokenizer(max_length=12).adapt(CAPTIONS))
    kw.setdefault("seed", 1)
    return cls(encoder or small_encoder(), embed_dim=16, text_width=16, text_depth=1, text_heads=2, **kw)


def random_images(n=16, size=16, channels=3, seed=0):
    """uint8 images with some structure (not pure noise)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(n, 1, 1, channels))
    noise = rng.integers(-40, 40, size=(n, size, size, channels))
    return np.clip(base + noise, 0, 255).astype("uint8")


class CrashAt(keras.callbacks.Callback):
    """Raises RuntimeError("simulated crash") after batch `batch` of epoch `epoch`."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            raise RuntimeError("simulated crash")


def grads(fn, *arrays):
    """Gradients of the scalar `fn(*tensors)` with respect to each array (NumPy)."""
    if BACKEND == "jax":
        import jax

        return [np.asarray(g) for g in jax.jit(jax.grad(fn, argnums=tuple(range(len(arrays)))))(*arrays)]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xs = [tf.constant(a) for a in arrays]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            loss = fn(*xs)
        return [np.zeros_like(a) if g is None else g.numpy() for a, g in zip(arrays, tape.gradient(loss, xs))]
    import torch

    xs = [torch.tensor(a, requires_grad=True) for a in arrays]
    loss = fn(*xs)
    if loss.requires_grad:  # a fully stopped graph has nothing to differentiate
        loss.backward()
    return [np.zeros_like(a) if x.grad is None else x.grad.numpy() for a, x in zip(arrays, xs)]


def outputs_without_keras_ssl(path, x):
    """Outputs on `x` of the model file at `path`, loaded by a fresh process that never imports keras_ssl."""
    import subprocess
    import sys

    np.save(path + ".npy", x)
    script = (
        f"import numpy as np, keras\nm = keras.saving.load_model({path!r})\n"
        f"np.save({path!r} + '.out.npy', m.predict(np.load({path!r} + '.npy'), verbose=0))\n"
        "import sys; assert 'keras_ssl' not in sys.modules"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, KERAS_BACKEND=BACKEND),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(path + ".out.npy")


class KeepWeights(keras.callbacks.Callback):
    """Copies the weights at each epoch end: the reference for what a checkpoint holds."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.get_weights()])
