"""Compile policy: the fastest `jit_compile` per backend and device, JAX's CPU compiler options,
building without side effects, and the train step `fit` runs for a skipped step."""

import functools

import keras

from keras_ssl.backend.probes import accelerator, backend

# `jit_compile="auto"` per (backend, device), from measurements. CPU (2 cores,
# benchmarks/throughput.py): XLA on JAX; a plain graph on TensorFlow (XLA was
# slower and costs minutes of compiling); eager PyTorch (torch.compile
# likewise). GPU and TPU: XLA on JAX and TensorFlow, its reason to exist;
# PyTorch stays eager until torch.compile is measured faster on a GPU.
_AUTO_JIT = {
    ("jax", "cpu"): True,
    ("tensorflow", "cpu"): False,
    ("torch", "cpu"): False,
    ("jax", "gpu"): True,
    ("tensorflow", "gpu"): True,
    ("torch", "gpu"): False,
    ("jax", "tpu"): True,
    ("tensorflow", "tpu"): True,
}


def resolve_jit_compile(jit_compile="auto", device=None):
    """The compile mode measured fastest for this backend and device.

    `"auto"` gives, on CPU, XLA on JAX, a plain graph on TensorFlow and
    eager PyTorch; on a GPU or TPU, XLA on JAX and TensorFlow and eager
    PyTorch (until `torch.compile` is measured faster there). An explicit
    `True`/`False` is kept.

    Args:
        jit_compile: `"auto"`, True or False.
        device: `"cpu"`, `"gpu"` or `"tpu"`; default: `accelerator()`.

    Example:
        >>> from keras_ssl.backend import resolve_jit_compile
        >>> resolve_jit_compile(), resolve_jit_compile(device="gpu"), resolve_jit_compile(False)   # on JAX
        (True, True, False)
        >>> encoder.compile(optimizer="sgd", loss="mse", jit_compile=resolve_jit_compile())
    """
    if jit_compile != "auto":
        return bool(jit_compile)
    return _AUTO_JIT.get((backend(), device or accelerator()), False)


# XLA:CPU hands dots, reductions, elementwise fusions and convolutions to YNNPACK by default.
# In a ResNet step its convolutions and elementwise fusions are the slow part (profiled: 65 %
# of a width-1.0 SimCLR step in YNNPACK convolutions at ~20 % of the matmul peak); XLA's own
# kernels for those make the Keras step 1.6x faster at width 1.0 and 1.0-1.1x at 0.25
# (`benchmarks/throughput.py`). YNNPACK keeps the reductions: XLA's own sum a 512x32x32 channel
# mean with 20x the error (2e-6 against 9e-8). Gradients against float64 are unchanged
# (tests/test_fast_layers.py). `benchmarks/jax_conv.py` times each choice.
XLA_CPU_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE,"
    "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_DOT"
}
_XLA_OPTIONS_OK = {}


def cpu_jit():
    """`jax.jit` with `XLA_CPU_OPTIONS`, or None where they do not apply.

    None unless the backend is JAX on one CPU device with no
    `keras.distribution` set, `XLA_CPU_OPTIONS` is not empty and this
    jaxlib accepts them (checked once, on a one-op function, so an XLA that
    renamed them costs nothing but the speed). Set
    `keras_ssl.backend.compile.XLA_CPU_OPTIONS = {}` before `fit` for XLA's defaults.

    Example:
        >>> import jax
        >>> jit = keras_ssl.distribute.cpu_jit()   # JAX on one CPU: jax.jit with XLA_CPU_OPTIONS
        >>> jit is not None
        True
        >>> step = (jit or jax.jit)(lambda x: 2 * x + 1)
        >>> float(step(np.float32(1.5)))
        4.0
    """
    if (
        backend() != "jax"
        or accelerator() != "cpu"
        or not XLA_CPU_OPTIONS
        or keras.distribution.distribution() is not None
    ):
        return None
    import jax

    key = tuple(sorted(XLA_CPU_OPTIONS.items()))
    if key not in _XLA_OPTIONS_OK:
        try:
            jax.jit(lambda x: x + 1, compiler_options=dict(key))(1.0)
            _XLA_OPTIONS_OK[key] = True
        except (RuntimeError, ValueError, TypeError):
            _XLA_OPTIONS_OK[key] = False
    return functools.partial(jax.jit, compiler_options=dict(key)) if _XLA_OPTIONS_OK[key] else None


def build_forward(fn, *args):
    """Runs `fn(*args)` once to create every variable it uses, changing no state.

    On JAX the call is only traced (`jax.eval_shape`): an eager JAX forward
    compiles each op on its own, about 20 s for a SimCLR step on CPU against
    well under a second traced. Elsewhere it runs eagerly (symbolic tracing on
    torch meets CPU variables with meta tensors). Both run in a
    `keras.StatelessScope`: assignments are dropped, and variables created
    inside are initialised when it exits.

    Example:
        >>> head = keras_ssl.layers.ProjectionHead(hidden_dim=8, output_dim=4)
        >>> keras_ssl.distribute.build_forward(lambda x: head(x, training=True), ops.ones((2, 16)))
        >>> head.built, [tuple(w.shape) for w in head.trainable_weights[:2]]
        (True, [(16, 8), (8,)])
        >>> moving_mean = [w for w in head.non_trainable_weights if "moving_mean" in w.path][0]
        >>> float(ops.max(ops.abs(moving_mean)))   # the training-mode call updated no statistic
        0.0
    """
    with keras.StatelessScope():
        if backend() == "jax":
            import jax

            jax.eval_shape(fn, *args)
        else:
            fn(*args)


def skipped_train_step(model, args):
    """What `fit`'s train function returns for a step that reads its batch and does not train.

    Keras 3.15's `fit` passes the TensorFlow and JAX train functions an
    iterator (and JAX the state, returned with the logs), PyTorch's the
    batches already read; see `keras_compat.skip_train_steps`.

    Args:
        model: the model being fitted.
        args: the arguments `fit` passed to the train function.

    Example:
        >>> encoder.compile(optimizer="sgd", loss="mse", steps_per_execution=2)
        >>> state, batches = ("trainable", "optimizer"), iter(range(10))
        >>> keras_ssl.backend.skipped_train_step(encoder, (state, batches))   # JAX: (logs, state)
        ({}, ('trainable', 'optimizer'))
        >>> next(batches)   # two batches were read and dropped
        2
    """
    if backend() in ("tensorflow", "jax"):  # the batches are read and dropped
        for _ in range(getattr(model, "steps_per_execution", 1) or 1):
            next(args[-1])
    return ({}, args[0]) if backend() == "jax" else {}  # JAX's state goes on unchanged


def needs_array_input(model):
    """Whether `fit` must get NumPy arrays rather than a `PyDataset`: a TF model under `tf.distribute`.

    A PyDataset's batches reach a `MirroredStrategy` step without a static
    size, and some gradients (of a matrix diagonal) need one; so there
    Keras shuffles the arrays itself (exact resume then restarts the epoch
    order from the global seed).

    Example:
        >>> from keras_ssl.backend import needs_array_input
        >>> needs_array_input(encoder)   # True only on TensorFlow under a multi-replica strategy
        False
        >>> x = x_train if needs_array_input(encoder) else keras_ssl.data.ArrayBatches(x_train, batch_size=16)
        >>> type(x).__name__, x.num_batches
        ('ArrayBatches', 4)
    """
    if backend() != "tensorflow":
        return False
    strategy = getattr(model, "distribute_strategy", None)
    return strategy is not None and strategy.num_replicas_in_sync > 1
