"""Replication: data parallelism over devices (JAX `DataParallel`, TF `MirroredStrategy`, PyTorch
processes), the gradient-correct gather of per-sample outputs across replicas, which share of the
input each process reads, how BatchNorm statistics span replicas, and multi-host setup."""

import keras

from keras_ssl.backend import processes, torch_processes
from keras_ssl.backend.probes import backend


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
    """Replicas that run this step in sync: TF `MirroredStrategy`'s, PyTorch's processes, else 1.

    On JAX under `DataParallel` the step sees the global batch: 1. On
    PyTorch under `torch_processes.initialize` it is the world size.

    Example:
        >>> keras_ssl.distribute.num_replicas()   # outside a TensorFlow multi-replica step
        1
        >>> global_loss = 0.75
        >>> loss = global_loss / keras_ssl.distribute.num_replicas()
    """
    context = _replica_context()
    return torch_processes.world_size() if context is None else int(context.num_replicas_in_sync)


def summed_replicas():
    """The replicas whose gradients the trainer adds up: what each replica divides its global loss by.

    Every replica computes the global loss (on the gathered outputs). Keras
    sums TensorFlow's replica gradients: `num_replicas()`. PyTorch's
    processes average theirs (`torch_processes.sync_gradients`), so the loss
    Keras reports stays the global loss: 1. JAX's step is global: 1.

    Example:
        >>> keras_ssl.distribute.summed_replicas()
        1
    """
    return int(num_replicas()) if _replica_context() is not None else 1


def gather(x):
    """Concatenates `x` over replicas along axis 0, with the right gradient.

    Inside a TensorFlow multi-replica step it returns the global batch in
    replica order (`rank * B + i` is local row `i` of replica `rank`); its
    backward sums the upstream gradients of all replicas and keeps the local
    rows (so no 1/N scaling, unlike an all-reduce without gradient). PyTorch
    processes (`torch_processes.initialize`) do the same, with
    `torch.distributed` collectives (`torch_processes.all_gather`). Elsewhere
    (one device, JAX's global-batch step) it returns `x` unchanged.

    Methods that update state inside `ssl_forward` (queues, centres) call
    `gather` on the values they store, so every replica stores the same
    global batch. Batches must be equal on all replicas (as `fit` makes
    them from NumPy, which drops the last incomplete batch).

    Args:
        x: a `(B, ...)` tensor (or a nested structure of them).

    Example:
        >>> keys = np.ones((8, 4), "float32")
        >>> keys = keras_ssl.distribute.gather(keys)  # before enqueueing
        >>> tuple(keys.shape)   # one replica: unchanged; (replicas * 8, 4) under a strategy
        (8, 4)
    """
    context = _replica_context()
    if context is None:
        return torch_processes.all_gather(x)
    import tensorflow as tf

    if not tf.nest.flatten(x):  # nothing to gather (a method that declares no gathered outputs)
        return x  # MirroredStrategy's all-reduce of nothing fails ("'NoneType' ... 'batch_reduce'")

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
        x,
        summed,
    )


def input_shard():
    """`(index, count)`: the share of the input this process reads, for sources that split themselves by process.

    JAX (`data_parallel` over every process's devices) and PyTorch processes:
    each process feeds its own rows of every global batch, so it is
    `(process_index(), process_count())`. TensorFlow's
    `MultiWorkerMirroredStrategy` splits the global input between the workers
    itself, so each worker reads the whole input: `(0, 1)`, as with one process.

    Example:
        >>> keras_ssl.backend.replication.input_shard()   # one process
        (0, 1)
    """
    if backend() == "tensorflow":
        return 0, 1
    return processes.process_index(), processes.process_count()


def batch_norm_sync():
    """How `layers.synchronize_batch_norm` makes BatchNorm statistics span the replicas on this backend.

    `"global"` (JAX: under `data_parallel` the jitted step sees the global
    batch, so BatchNorm's statistics are already those of the global batch),
    `"gather"` (PyTorch processes: keras_ssl all-gathers each process's batch
    mean and variance with `gather`, whose backward sums the gradient over the
    processes), `"unavailable"` (TensorFlow: inside an SSL step that also
    gathers its outputs, both Keras's `synchronized=True` and the gather of
    the moments abort with "Shape mismatch in the collective instance", the
    replicas running their collectives in different orders; measured under
    `MirroredStrategy` on 2 CPU devices).

    Example:
        >>> keras_ssl.backend.replication.batch_norm_sync()   # doctests run on JAX
        'global'
    """
    return {"jax": "global", "torch": "gather"}.get(backend(), "unavailable")


def _single_device_only(devices, what):
    if backend() == "torch":
        count = 1 if devices is None else devices if isinstance(devices, int) else len(devices)
        if count > 1:
            raise NotImplementedError(
                f"`{what}` on PyTorch: keras_ssl trains on one device per process with the torch "
                "backend (Keras 3 has no multi-device trainer for torch). Start one process per "
                "device (torchrun) with `keras_ssl.distribute.torch_processes.initialize()`, or use "
                "the JAX backend (`data_parallel`) or TensorFlow (`mirrored_strategy`)."
            )


def _first(devices, available):
    """`devices` as given, or the first `devices` of `available` when it is a count."""
    if not isinstance(devices, int):
        return devices
    if not 1 <= devices <= len(available):
        raise ValueError(f"`devices` must be in [1, {len(available)}], got {devices}.")
    return available[:devices]


def data_parallel(devices=None):
    """Data parallelism over the devices on JAX (every process's, after `initialize`); returns the distribution.

    Call it before creating the model. Each step sees the global batch split
    over the devices; the loss and gradients equal those of one device. With
    several processes each feeds its own rows (`process_shard`).

    Args:
        devices: list of device names (e.g. `["gpu:0", "gpu:1"]`) or a count
            of the first devices; `None` uses all devices.

    Example:
        >>> distribution = keras_ssl.distribute.data_parallel()   # every local device: one CPU here
        >>> type(distribution).__name__, keras.distribution.distribution() is distribution
        ('DataParallel', True)
        >>> tuple(distribution.device_mesh.shape)
        (1,)
        >>> model = keras_ssl.SimCLR(keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8))
        >>> model.compile()   # model.fit(x, batch_size=512) then splits each batch over the devices
        >>> keras.distribution.set_distribution(None)   # back to no distribution
    """
    _single_device_only(devices, "data_parallel")
    if backend() != "jax":
        raise NotImplementedError(
            f"`data_parallel` needs the JAX backend (got {backend()}); on TensorFlow use "
            "`with keras_ssl.distribute.mirrored_strategy().scope(): ...`."
        )
    devices = _first(devices, keras.distribution.list_devices())
    # Each process feeds its own rows (`processes.process_shard`): Keras's auto-sharding takes only
    # tf.data and refuses arrays and PyDatasets with several processes.
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
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
        >>> strategy = keras_ssl.distribute.mirrored_strategy()  # doctest: +SKIP
        >>> with strategy.scope():  # doctest: +SKIP
        ...     model = keras_ssl.SimCLR(encoder); model.compile()
        >>> history = model.fit(x_small, batch_size=8, epochs=1, verbose=0)  # doctest: +SKIP

        On JAX it points to `data_parallel`:

        >>> keras_ssl.distribute.mirrored_strategy()
        Traceback (most recent call last):
        ...
        NotImplementedError: `mirrored_strategy` needs the TensorFlow backend (got jax);
        on JAX use `keras_ssl.distribute.data_parallel()`.
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


def _ring_mesh(*tensors):
    """`(mesh, axis)` of JAX's data-parallel distribution when its batch axis can carry a ring, else None."""
    if backend() != "jax":
        return None
    distribution = keras.distribution.distribution()
    axis = getattr(distribution, "batch_dim_name", None)
    if distribution is None or axis is None:
        return None
    mesh = distribution.device_mesh.backend_mesh
    n = int(mesh.shape[axis])
    batches = [t.shape[0] for t in tensors]
    # a batch the devices cannot split evenly (the build's blank batch of 2) runs on one device
    if n < 2 or any(b is None or b % n for b in batches):
        return None
    return mesh, axis


def ring_sum(fn, local, passed, *replicated):
    """Sums `fn` over every (local block, passed block) pair of the replicas, passing blocks round a ring.

    On JAX under a data-parallel distribution with `n > 1` devices, each
    device holds its rows of `local` and of `passed`; at step `k` it computes
    `fn(local_r, passed_(r+k) mod n, k == 0, *replicated)`, then hands its
    `passed` block to its neighbour (`jax.lax.ppermute` in `shard_map`), so
    no device ever holds more than one block of `passed` (SigLIP's ring,
    Zhai et al. 2023, Sec. 3.3). The `n * n` partial sums are added over
    the devices; gradients flow back round the ring. Elsewhere (one device,
    TensorFlow, where `SSLModel` has gathered the global batch, PyTorch) it
    returns `fn(local, passed, True, *replicated)`.

    Args:
        fn: `fn(local_block, passed_block, own, *replicated) -> scalar`;
            `own` (a Python bool) is True when the blocks are the same
            replica's rows (row `i` of both is the same sample).
        local: `(B, ...)` tensor that stays on its device.
        passed: `(B, ...)` tensor passed round the ring.
        *replicated: tensors every device sees whole (scalars).

    Example:
        >>> a = np.arange(8.0).reshape(4, 2)
        >>> total = keras_ssl.backend.replication.ring_sum(lambda x, y, own: ops.sum(x) * ops.sum(y), a, a)
        >>> float(total)   # one device: fn(a, a, True)
        784.0
    """
    ring = _ring_mesh(local, passed)
    if ring is None:
        return fn(local, passed, True, *replicated)
    import jax
    from jax.sharding import PartitionSpec

    mesh, axis = ring
    n = int(mesh.shape[axis])
    # device i sends to i - 1, so after k steps device r holds the block of replica (r + k) mod n
    shift = [(i, (i - 1) % n) for i in range(n)]

    def per_device(x, y, *scalars):
        total = fn(x, y, True, *scalars)
        for _ in range(n - 1):
            y = jax.lax.ppermute(y, axis, shift)
            total = total + fn(x, y, False, *scalars)
        return jax.lax.psum(total, axis)

    specs = (PartitionSpec(axis), PartitionSpec(axis)) + (PartitionSpec(),) * len(replicated)
    return jax.shard_map(per_device, mesh=mesh, in_specs=specs, out_specs=PartitionSpec())(local, passed, *replicated)
