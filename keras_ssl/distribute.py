"""Backend-specific glue: the only module that branches on the Keras backend.

Single process, many devices:

- JAX: `data_parallel()` sets `keras.distribution.DataParallel`. The jitted
  step sees the global batch (sharded over devices), so contrastive
  negatives, queues and centres are global with no extra code.
- TensorFlow: `mirrored_strategy()`; each replica runs the step on its slice
  of the batch and `SSLModel.compute_loss` gathers the forward outputs with
  `gather` (gradient: sum over replicas, sliced to the local rows), computes
  the global loss and divides it by the number of replicas, because Keras
  sums the replicas' gradients.
- PyTorch: one device only.

Multi-host JAX: call `initialize()` first on every host.
"""

import functools

import keras


def backend():
    """The active Keras backend name ("tensorflow", "jax" or "torch")."""
    return keras.backend.backend()


def accelerator():
    """The kind of device the backend computes on: `"cpu"`, `"gpu"` or `"tpu"`.

    Example:
        >>> accelerator()
        'cpu'
    """
    name = backend()
    if name == "jax":
        import jax

        return {"cuda": "gpu", "rocm": "gpu"}.get(jax.default_backend(), jax.default_backend())
    if name == "tensorflow":
        import tensorflow as tf

        for kind in ("TPU", "GPU"):
            if tf.config.list_logical_devices(kind):
                return kind.lower()
        return "cpu"
    if name == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


# `jit_compile="auto"` per (backend, device), from measurements. CPU (2 cores,
# benchmarks/throughput.py): XLA on JAX; a plain graph on TensorFlow (XLA was
# slower and costs minutes of compiling); eager PyTorch (torch.compile
# likewise). GPU and TPU: XLA on JAX and TensorFlow, its reason to exist;
# PyTorch stays eager until torch.compile is measured faster on a GPU.
_AUTO_JIT = {
    ("jax", "cpu"): True, ("tensorflow", "cpu"): False, ("torch", "cpu"): False,
    ("jax", "gpu"): True, ("tensorflow", "gpu"): True, ("torch", "gpu"): False,
    ("jax", "tpu"): True, ("tensorflow", "tpu"): True,
}


def conv_layout():
    """The layout keras_ssl's conv backbones compute in on this backend.

    On PyTorch, Keras's channels-last convolution copies its input to
    channels-first and then to channels-last memory, and its output back
    (27 % of a ResNet step, profiled); a channels-first graph fed one
    transposed view of the `(B, H, W, C)` images is already in PyTorch's
    channels-last memory format, which every convolution, BatchNorm and
    addition keeps, so nothing is copied. TensorFlow and JAX compute in
    channels-last.

    Example:
        >>> layers.Conv2D(64, 3, data_format=conv_layout())
    """
    return "channels_first" if backend() == "torch" else "channels_last"


def fused_batch_norm(x, scale, offset, axis, epsilon):
    """Training-mode batch norm by the backend's fused kernel, or None where there is none.

    Normalises `x` over every axis but `axis` with the batch's statistics,
    as `keras.ops.batch_normalization(x, mean, variance, ...)` after
    `keras.ops.moments`, in one kernel whose gradient is the exact one:
    PyTorch's `batch_norm` (any axis, moved to dimension 1 as a view, so a
    channels-last memory format is kept) and TensorFlow's
    `FusedBatchNormV3` (float32, channels-last 4-D or 2-D inputs). None on
    JAX (XLA fuses Keras's ops itself) and for other cases, where the
    caller takes Keras's path.

    Args:
        x: the activations, float.
        scale, offset: `(C,)` tensors, or None for 1 and 0.
        axis: the channel axis of `x`.
        epsilon: added to the variance.

    Returns:
        `(outputs, mean, variance)`, the variance biased (divided by the
        number of values per channel, as `keras.ops.moments`), or None.

    Example:
        >>> out = fused_batch_norm(x, gamma, beta, axis=-1, epsilon=1e-5)
    """
    kind = backend()
    if kind == "torch":
        import torch
        import torch.nn.functional as F

        axis = axis % x.ndim
        count = x.numel() // x.shape[axis]
        if count < 2:  # PyTorch refuses a single value per channel; Keras gives variance 0
            return None
        moved = torch.movedim(x, axis, 1)
        # momentum 1 makes the "running" buffers the batch's mean and unbiased variance.
        mean = torch.zeros(moved.shape[1], dtype=x.dtype, device=x.device)
        variance = torch.zeros_like(mean)
        outputs = F.batch_norm(moved, mean, variance, scale, offset, training=True, momentum=1.0, eps=epsilon)
        return torch.movedim(outputs, 1, axis), mean, variance * ((count - 1) / count)
    if kind == "tensorflow":
        import tensorflow as tf

        rank = x.shape.rank
        axis = axis % rank
        if x.dtype != tf.float32 or axis != rank - 1 or rank not in (2, 4):
            return None
        channels = x.shape[-1]
        flat = x if rank == 4 else tf.reshape(x, (-1, 1, 1, channels))
        scale = tf.ones((channels,), x.dtype) if scale is None else scale
        offset = tf.zeros((channels,), x.dtype) if offset is None else offset
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            flat, scale, offset, epsilon=epsilon, data_format="NHWC", is_training=True)
        # FusedBatchNormV3 returns the unbiased variance (for its running average).
        count = tf.cast(tf.size(x) // channels, x.dtype)
        variance = variance * tf.maximum(count - 1, 0.0) / count
        return (outputs if rank == 4 else tf.reshape(outputs, tf.shape(x))), mean, variance
    return None


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
        >>> model.compile(jit_compile=resolve_jit_compile())
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
XLA_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE,"
                   "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_DOT"}
_XLA_OPTIONS_OK = {}


def cpu_jit():
    """`jax.jit` with `XLA_CPU_OPTIONS`, or None where they do not apply.

    None unless the backend is JAX on one CPU device with no
    `keras.distribution` set, `XLA_CPU_OPTIONS` is not empty and this
    jaxlib accepts them (checked once, on a one-op function, so an XLA that
    renamed them costs nothing but the speed). Set
    `distribute.XLA_CPU_OPTIONS = {}` before `fit` for XLA's defaults.

    Example:
        >>> jit = distribute.cpu_jit()
        >>> step = (jit or jax.jit)(train_step, donate_argnums=0)
    """
    if (backend() != "jax" or accelerator() != "cpu" or not XLA_CPU_OPTIONS
            or keras.distribution.distribution() is not None):
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
        >>> distribute.build_forward(lambda x: model.call(x, training=True), ops.zeros((2, 32, 32, 3)))
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
        >>> logs = skipped_train_step(model, (iterator,))
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
        >>> if not needs_array_input(model): x = ArrayBatches(x, batch_size=256)
    """
    if backend() != "tensorflow":
        return False
    strategy = getattr(model, "distribute_strategy", None)
    return strategy is not None and strategy.num_replicas_in_sync > 1


def _replica_context():
    """The TF replica context when running inside a multi-replica step, else None."""
    if backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync < 2:
        return None
    return context


def num_replicas():
    """Replicas that run this step in sync (TF `MirroredStrategy`), else 1.

    On JAX under `DataParallel` the step sees the global batch: 1.

    Example:
        >>> loss = global_loss / num_replicas()
    """
    context = _replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def gather(x):
    """Concatenates `x` over replicas along axis 0, with the right gradient.

    Inside a TensorFlow multi-replica step it returns the global batch in
    replica order (`rank * B + i` is local row `i` of replica `rank`); its
    backward sums the upstream gradients of all replicas and keeps the local
    rows (so no 1/N scaling, unlike an all-reduce without gradient). Elsewhere
    (one device, JAX's global-batch step, torch) it returns `x` unchanged.

    Methods that update state inside `ssl_forward` (queues, centres) call
    `gather` on the values they store, so every replica stores the same
    global batch. Batches must be equal on all replicas (as `fit` makes
    them from NumPy, which drops the last incomplete batch).

    Args:
        x: a `(B, ...)` tensor (or a nested structure of them).

    Example:
        >>> keys = distribute.gather(keys)  # before enqueueing
    """
    context = _replica_context()
    if context is None:
        return x
    import tensorflow as tf

    # Each replica places its rows at rank * B in zeros and the replicas
    # sum: the all-reduce's gradient is the sum of the replicas' upstream
    # gradients and the pad's gradient keeps the local rows. Not
    # `ReplicaContext.all_gather`: its shape and value collectives are
    # unordered across tensors and replicas (measured on CPU: "Shape mismatch
    # in the collective instance" aborts), while the all-reduce goes through
    # the strategy's cross-device ops like Keras's gradient sum.
    n, rank = context.num_replicas_in_sync, context.replica_id_in_sync_group

    def place(t):
        t = tf.convert_to_tensor(t)
        rows = tf.shape(t)[0]
        pads = [[rank * rows, (n - 1 - rank) * rows]] + [[0, 0]] * (t.shape.rank - 1)
        return tf.pad(tf.cast(t, "int32") if t.dtype == tf.bool else t, pads)

    placed = tf.nest.map_structure(place, x)
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, placed)
    return tf.nest.map_structure(
        lambda t, g: tf.cast(g, tf.bool) if tf.convert_to_tensor(t).dtype == tf.bool else g,
        x, summed,
    )


def _single_device_only(devices, what):
    if backend() == "torch":
        count = 1 if devices is None else devices if isinstance(devices, int) else len(devices)
        if count > 1:
            raise NotImplementedError(
                f"`{what}` on PyTorch: keras_ssl trains on one device only with the torch "
                "backend (Keras 3 has no multi-device trainer for torch). Use the JAX "
                "backend (`data_parallel`) or TensorFlow (`mirrored_strategy`)."
            )


def _first(devices, available):
    """`devices` as given, or the first `devices` of `available` when it is a count."""
    if not isinstance(devices, int):
        return devices
    if not 1 <= devices <= len(available):
        raise ValueError(f"`devices` must be in [1, {len(available)}], got {devices}.")
    return available[:devices]


def data_parallel(devices=None):
    """Data parallelism over the local devices on JAX; returns the distribution.

    Call it before creating the model. Each step sees the global batch split
    over the devices; the loss and gradients equal those of one device.

    Args:
        devices: list of device names (e.g. `["gpu:0", "gpu:1"]`) or a count
            of the first devices; `None` uses all devices.

    Example:
        >>> keras_ssl.distribute.data_parallel()
        >>> model = keras_ssl.SimCLR(encoder); model.compile(); model.fit(x, batch_size=512)
    """
    _single_device_only(devices, "data_parallel")
    if backend() != "jax":
        raise NotImplementedError(
            f"`data_parallel` needs the JAX backend (got {backend()}); on TensorFlow use "
            "`with keras_ssl.distribute.mirrored_strategy().scope(): ...`."
        )
    devices = _first(devices, keras.distribution.list_devices())
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    return distribution


def mirrored_strategy(devices=None):
    """A `tf.distribute.MirroredStrategy` over the local devices (TensorFlow).

    Create and compile the model inside its scope; `fit` then splits each
    batch over the replicas and `SSLModel` gathers embeddings across them.

    Args:
        devices: list of device names (e.g. `["/gpu:0", "/gpu:1"]`) or a count
            of the first logical devices (GPUs if any, else CPUs); `None`
            uses all GPUs (or the CPU).

    Example:
        >>> strategy = keras_ssl.distribute.mirrored_strategy()
        >>> with strategy.scope():
        ...     model = keras_ssl.SimCLR(encoder); model.compile()
        >>> model.fit(x, batch_size=512)
    """
    _single_device_only(devices, "mirrored_strategy")
    if backend() != "tensorflow":
        raise NotImplementedError(
            f"`mirrored_strategy` needs the TensorFlow backend (got {backend()}); on JAX "
            "use `keras_ssl.distribute.data_parallel()`."
        )
    import tensorflow as tf

    available = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    devices = _first(devices, [d.name for d in available])
    return tf.distribute.MirroredStrategy(devices=devices)


def initialize(job_addresses=None, num_processes=None, process_id=None):
    """Multi-host JAX setup (`keras.distribution.initialize`); call first on every host.

    Args:
        job_addresses: comma-separated `host:port` of the coordinator (first).
        num_processes: number of hosts.
        process_id: this host's index.

    Example:
        >>> keras_ssl.distribute.initialize("10.0.0.1:1234", 2, 0)
        >>> keras_ssl.distribute.data_parallel()
    """
    if backend() != "jax":
        raise NotImplementedError(f"multi-host training needs the JAX backend, got {backend()}.")
    keras.distribution.initialize(job_addresses, num_processes, process_id)


# ------------------------------------------------ convolution as chunked matmuls (JAX on CPU)
# XLA:CPU computes a convolution's kernel gradient as a convolution with the batch as its
# feature dimension, transposing every saved activation and output gradient first: 1.3-1.5 s
# of a 3 s ResNet-18 x0.25 forward+backward (profiled, `benchmarks/jax_conv.py`). Here the
# kernel gradient is `patches^T @ dy`, a few images at a time so the patches stay in cache;
# stride-2 convolutions are chunked im2col matmuls both ways, 1x1 ones a strided slice and a
# dot; stride-1 3x3 forward and input gradient stay XLA's (fastest there).
_CHUNK_BYTES = 4 << 20  # patches per chunk: fits the L2/L3 of a CPU core
_CONV = None


def fast_conv(x, kernel, strides, padding, data_format, dilation_rate):
    """A 2-D convolution faster than XLA's on the JAX CPU backend, or None where it is not.

    The same function as `keras.ops.conv` (Keras's "same" padding, the
    extra pixel after), and its exact gradient, for channels-last 1x1 and
    3x3 kernels without dilation on one CPU device: 1.4-1.6x the ResNet's
    jitted forward+backward (`benchmarks/jax_conv.py`). None elsewhere (other
    backends, GPUs, a `keras.distribution` set, where a scan over a sharded
    batch would gather it), and the caller takes `keras.ops.conv`.

    Args:
        x: `(B, H, W, C)` inputs.
        kernel: `(kh, kw, C, O)`.
        strides, dilation_rate: pairs of ints.
        padding: "same" or "valid".
        data_format: "channels_last" or "channels_first".

    Returns:
        `(B, H', W', O)`, or None.

    Example:
        >>> y = fast_conv(x, kernel, (2, 2), "same", "channels_last", (1, 1))
    """
    if (backend() != "jax" or data_format != "channels_last" or tuple(dilation_rate) != (1, 1)
            or tuple(kernel.shape[:2]) not in ((1, 1), (3, 3)) or len(x.shape) != 4
            or keras.distribution.distribution() is not None or accelerator() != "cpu"):
        return None
    global _CONV
    if _CONV is None:
        _CONV = _jax_conv()
    strides = tuple(strides)
    pads = _same_pads(x.shape[1:3], kernel.shape[:2], strides) if padding == "same" else ((0, 0), (0, 0))
    out = _out_size(x.shape[1:3], kernel.shape[:2], strides, pads)
    if min(out) < 1 or _chunk(x, out, kernel) is None:
        return None
    return _CONV(x, kernel, strides, pads)


def _same_pads(size, kernel, strides):
    pads = []
    for n, k, s in zip(size, kernel, strides):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _out_size(size, kernel, strides, pads):
    return tuple((n + p[0] + p[1] - k) // s + 1 for n, k, s, p in zip(size, kernel, strides, pads))


def _chunk(x, out, kernel):
    """Images per chunk: a divisor of the batch with about `_CHUNK_BYTES` of patches, or None."""
    per_image = out[0] * out[1] * kernel.shape[0] * kernel.shape[1] * kernel.shape[2] * x.dtype.itemsize
    n = x.shape[0]
    want = min(n, max(1, _CHUNK_BYTES // per_image))
    size = max(d for d in range(1, want + 1) if n % d == 0)
    return size if 4 * size >= want else None  # a prime batch: many tiny chunks; XLA's is better


def _jax_conv():
    import jax
    import jax.numpy as jnp
    from jax import lax

    numbers = ("NHWC", "HWIO", "NHWC")

    def patches(x, kh, kw, strides, pads):
        # (B, H', W', kh*kw*C) in (i, j, c) order, the rows of kernel.reshape(kh*kw*C, O)
        (sh, sw), (ho, wo) = strides, _out_size(x.shape[1:3], (kh, kw), strides, pads)
        xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
        cols = [lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, xp.shape[3]),
                          (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
        return jnp.concatenate(cols, -1) if len(cols) > 1 else cols[0]

    def per_chunk(f, size, *arrays):
        split = [a.reshape((a.shape[0] // size, size) + a.shape[1:]) for a in arrays]
        y = lax.map(lambda t: f(*t), tuple(split))
        return y.reshape((-1,) + y.shape[2:])

    def forward_mm(x, w, strides, pads):
        kh, kw, c, o = w.shape
        return jnp.dot(patches(x, kh, kw, strides, pads), w.reshape(kh * kw * c, o))

    def input_grad_mm(dy, w, x_shape, strides, pads):
        # dy @ W^T gives each tap's contribution; each is padded into place (interior
        # padding = stride - 1) and summed: col2im.
        kh, kw, c, o = w.shape
        (sh, sw), (b, h, wd, _), (ho, wo) = strides, x_shape, dy.shape[1:3]
        hp, wp = h + sum(pads[0]), wd + sum(pads[1])
        taps = jnp.dot(dy, w.reshape(kh * kw * c, o).T).reshape(b, ho, wo, kh * kw, c)
        total = 0
        for t in range(kh * kw):
            i, j = divmod(t, kw)
            config = ((0, 0, 0), (i, hp - i - sh * (ho - 1) - 1, sh - 1), (j, wp - j - sw * (wo - 1) - 1, sw - 1),
                      (0, 0, 0))
            total = total + lax.pad(taps[:, :, :, t, :], jnp.zeros((), dy.dtype), config)
        return total[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + wd, :]

    def kernel_grad_mm(x, dy, shape, strides, pads, size):
        kh, kw, c, o = shape
        k = kh * kw * c
        xs, ds = x.reshape((-1, size) + x.shape[1:]), dy.reshape((-1, size) + dy.shape[1:])

        def body(total, chunk):
            p = patches(chunk[0], kh, kw, strides, pads).reshape(-1, k)
            return total + lax.dot_general(p, chunk[1].reshape(-1, o), (((0,), (0,)), ((), ()))), None

        return lax.scan(body, jnp.zeros((k, o), x.dtype), (xs, ds))[0].reshape(shape)

    def xla(x, w, strides, pads):
        return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=numbers)

    def _forward(x, w, strides, pads):
        kh, kw = w.shape[:2]
        if kh * kw > 1 and strides == (1, 1):
            return xla(x, w, strides, pads)
        if kh * kw == 1:
            return forward_mm(x, w, strides, pads)
        size = _chunk(x, _out_size(x.shape[1:3], (kh, kw), strides, pads), w)
        return per_chunk(lambda xc: forward_mm(xc, w, strides, pads), size, x)

    def fwd(x, w, strides, pads):
        return _forward(x, w, strides, pads), (x, w)

    def bwd(strides, pads, saved, dy):
        x, w = saved
        kh, kw = w.shape[:2]
        size = _chunk(x, dy.shape[1:3], w)
        if kh * kw > 1 and strides == (1, 1):
            dx = jax.vjp(lambda t: xla(t, w, strides, pads), x)[1](dy)[0]
        elif kh * kw == 1:
            dx = input_grad_mm(dy, w, x.shape, strides, pads)
        else:
            dx = per_chunk(lambda dc: input_grad_mm(dc, w, (dc.shape[0],) + x.shape[1:], strides, pads), size, dy)
        return dx, kernel_grad_mm(x, dy, w.shape, strides, pads, size)

    conv = jax.custom_vjp(_forward, nondiff_argnums=(2, 3))
    conv.defvjp(fwd, bwd)
    return conv
