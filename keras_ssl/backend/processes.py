"""Many processes (one or more per host): the cluster read from arguments or the launcher's variables,
each backend's own runtime started on it, which process is the chief, and which rows each one feeds.

Every process runs the same script; the cluster comes from arguments or, in this order, from
`KERAS_SSL_COORDINATOR`/`KERAS_SSL_NUM_PROCESSES`/`KERAS_SSL_PROCESS_ID`, Keras's
`KERAS_DISTRIBUTION_JOB_ADDRESSES`/`..._NUM_PROCESSES`/`..._PROCESS_ID`, JAX's
`JAX_COORDINATOR_ADDRESS`/`JAX_NUM_PROCESSES`/`JAX_PROCESS_ID`, torchrun's
`MASTER_ADDR`:`MASTER_PORT`/`WORLD_SIZE`/`RANK`, and TensorFlow's `TF_CONFIG`.
"""

import collections
import contextlib
import json
import os
import random

import keras
import numpy as np

from keras_ssl.backend.probes import backend

Cluster = collections.namedtuple("Cluster", ["addresses", "num_processes", "process_id", "source"])
Cluster.__doc__ = """The processes of one run: `addresses` ("host:port", the coordinator (process 0) first; every
process's where the launcher gave them all), `num_processes`, this `process_id`, and the `source` read."""

# (coordinator, count, index) variables of each launcher, in order of precedence.
ENVIRONMENT = (
    ("KERAS_SSL_COORDINATOR", "KERAS_SSL_NUM_PROCESSES", "KERAS_SSL_PROCESS_ID"),
    ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID"),
    ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"),
    ("MASTER_ADDR", "WORLD_SIZE", "RANK"),  # torchrun; the port is MASTER_PORT
)

# backend name -> setup(cluster, timeout, heartbeat_timeout); PyTorch's registers itself (`register_backend`).
_SETUP = {}


def _integer(value, where):
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be an integer, got {value!r}.") from None


def _from_tf_config(text):
    """`(addresses, count, index)` of the chief and workers in a `TF_CONFIG` string."""
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task.get("index", 0))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not a TensorFlow cluster description ({e}): {text!r}.") from None
    # Evaluators and parameter servers take no part in a synchronous data-parallel step.
    if kind not in ("chief", "worker"):
        raise ValueError(f"TF_CONFIG task type {kind!r}: keras_ssl trains on 'chief' and 'worker' tasks only.")
    addresses = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
    position = index if kind == "chief" else len(cluster.get("chief", [])) + index
    return ",".join(addresses), len(addresses), position


def _environment(environ):
    """The first launcher's value of each field and the variable it came from."""
    found = {}
    for names in ENVIRONMENT:
        for field, name in zip(("addresses", "num_processes", "process_id"), names):
            if field not in found and environ.get(name):
                value = environ[name]
                if name == "MASTER_ADDR":
                    value = f"{value}:{environ.get('MASTER_PORT', '29500')}"  # torchrun's default port
                found[field] = (value, name)
    if environ.get("TF_CONFIG"):
        for field, value in zip(("addresses", "num_processes", "process_id"), _from_tf_config(environ["TF_CONFIG"])):
            found.setdefault(field, (value, "TF_CONFIG"))
    return found


def cluster(addresses=None, num_processes=None, process_id=None, environ=None):
    """The cluster this process belongs to, from the arguments or the launcher's variables; None if alone.

    Each field comes from its argument, else from the first launcher that
    sets it (see the module's docstring for the order).

    Args:
        addresses: `"host:port"` of process 0 (the coordinator), or of every
            process, comma-separated, process 0 first (TensorFlow needs all).
        num_processes: number of processes.
        process_id: this process's index in `[0, num_processes)`.
        environ: the variables to read (default `os.environ`).

    Example:
        >>> from keras_ssl.backend.processes import cluster
        >>> cluster(environ={}) is None   # no launcher, no arguments: one process
        True
        >>> cluster(environ={"KERAS_SSL_COORDINATOR": "10.0.0.1:1234", "KERAS_SSL_NUM_PROCESSES": "2",
        ...                  "KERAS_SSL_PROCESS_ID": "1"})
        Cluster(addresses=('10.0.0.1:1234',), num_processes=2, process_id=1, source='KERAS_SSL_COORDINATOR')
        >>> cluster(environ={"MASTER_ADDR": "node0", "MASTER_PORT": "29400", "WORLD_SIZE": "4", "RANK": "3"})
        Cluster(addresses=('node0:29400',), num_processes=4, process_id=3, source='MASTER_ADDR')
        >>> cluster("10.0.0.1:1234", 2, 2, environ={})
        Traceback (most recent call last):
        ...
        ValueError: the process id must be in [0, 2), got 2 (from the arguments).
    """
    found = _environment(os.environ if environ is None else environ)
    for field, value in (("addresses", addresses), ("num_processes", num_processes), ("process_id", process_id)):
        if value is not None:
            found[field] = (value, "the arguments")
    if not found:
        return None
    if set(found) == {"num_processes", "process_id"} and _integer(*found["num_processes"]) == 1:
        return None  # a launcher's one-process run needs no coordinator
    missing = [f for f in ("addresses", "num_processes", "process_id") if f not in found]
    if missing:
        given = ", ".join(f"{f} from {where}" for f, (_, where) in found.items())
        raise ValueError(
            f"incomplete cluster: {given}, but no {' or '.join(missing)}. Set KERAS_SSL_COORDINATOR "
            "(host:port of process 0), KERAS_SSL_NUM_PROCESSES and KERAS_SSL_PROCESS_ID on every process."
        )
    count = _integer(found["num_processes"][0], f"the number of processes (from {found['num_processes'][1]})")
    index = _integer(found["process_id"][0], f"the process id (from {found['process_id'][1]})")
    if count < 1:
        raise ValueError(f"the number of processes must be >= 1, got {count} (from {found['num_processes'][1]}).")
    if not 0 <= index < count:
        raise ValueError(f"the process id must be in [0, {count}), got {index} (from {found['process_id'][1]}).")
    text, where = found["addresses"]
    listed = tuple(a.strip() for a in str(text).split(",") if a.strip())
    if not listed or not all(a.rpartition(":")[2].isdigit() for a in listed):
        raise ValueError(f"addresses must be 'host:port[,host:port...]', got {text!r} (from {where}).")
    if len(listed) > 1 and len(listed) != count:
        raise ValueError(f"{len(listed)} addresses for {count} processes (from {where}): give one or all.")
    return Cluster(listed, count, index, where)


def register_backend(name, setup):
    """Registers `setup(cluster, timeout, heartbeat_timeout)`, which starts backend `name`'s runtime.

    JAX's and TensorFlow's are built in; a backend package (PyTorch's
    process group) registers its own when it is imported.

    Args:
        name: a Keras backend name.
        setup: called by `initialize` with the `Cluster` and the timeouts.

    Example:
        >>> from keras_ssl.backend import processes
        >>> processes.register_backend("numpy", lambda cluster, timeout, heartbeat_timeout: None)
        >>> "numpy" in processes._SETUP
        True
    """
    _SETUP[name] = setup


def initialize(addresses=None, num_processes=None, process_id=None, *, timeout=300, heartbeat_timeout=100):
    """Joins this process to the cluster; call first, on every process, before any model or computation.

    JAX: `jax.distributed.initialize` (what `keras.distribution.initialize`
    calls) with gloo collectives on CPU (NCCL on GPUs is XLA's own choice),
    then every process takes process 0's random seed, so the weights start
    equal everywhere; then `data_parallel()` spans every process's devices.
    TensorFlow: writes `TF_CONFIG` from the cluster (unless the launcher set
    it) for `multi_worker_strategy()`. Other backends: their registered setup.

    Args:
        addresses, num_processes, process_id: see `cluster`.
        timeout: seconds to wait for every process to join (and, on JAX, to
            leave together at exit).
        heartbeat_timeout: seconds of silence after which JAX's coordinator
            declares a process lost and stops the others.

    Returns:
        The `Cluster`, or None when there is one process (nothing to start).

    Example:
        >>> keras_ssl.backend.processes.initialize() is None   # no launcher variables: one process, nothing to start
        True
        >>> keras_ssl.backend.processes.initialize("10.0.0.1:1234", 2, 0)  # doctest: +SKIP
    """
    found = cluster(addresses, num_processes, process_id)
    if found is None:
        return None
    setup = _SETUP.get(backend()) or {"jax": _initialize_jax, "tensorflow": _initialize_tensorflow}.get(backend())
    if setup is None:
        raise NotImplementedError(f"multi-process training on the {backend()} backend is not available.")
    setup(found, timeout, heartbeat_timeout)
    return found


def _initialize_jax(found, timeout, heartbeat_timeout):
    import jax
    from jax.experimental import multihost_utils

    if jax.distributed.is_initialized():
        if jax.process_count() != found.num_processes or jax.process_index() != found.process_id:
            raise RuntimeError(
                f"JAX is already initialized as process {jax.process_index()} of {jax.process_count()}, "
                f"not {found.process_id} of {found.num_processes}."
            )
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=found.addresses[0],
            num_processes=found.num_processes,
            process_id=found.process_id,
            initialization_timeout=int(timeout),
            heartbeat_timeout_seconds=int(heartbeat_timeout),
            shutdown_timeout_seconds=int(timeout),
        )
    except RuntimeError as e:
        if "must be called before" in str(e):
            raise RuntimeError(
                "keras_ssl.distribute.initialize() must run before anything touches JAX's devices "
                "(a model, an array, jax.devices()): call it first in the script."
            ) from e
        raise
    # Keras draws initial weights and SeedGenerator seeds from Python's `random`: every process takes
    # process 0's seed (drawn from the user's seeding when there is one), as Keras's own initialize does.
    seed = multihost_utils.broadcast_one_to_all(np.int32(random.randint(1, 2**31 - 1)))
    keras.utils.set_random_seed(int(seed))


def _initialize_tensorflow(found, timeout, heartbeat_timeout):
    if os.environ.get("TF_CONFIG"):
        return  # the launcher's, which `cluster` read
    if len(found.addresses) != found.num_processes:
        raise ValueError(
            f"TensorFlow needs every worker's address, got {len(found.addresses)} for {found.num_processes} "
            "processes: set TF_CONFIG, or KERAS_SSL_COORDINATOR='host0:port,host1:port,...' (process 0 first)."
        )
    worker = {"cluster": {"worker": list(found.addresses)}, "task": {"type": "worker", "index": found.process_id}}
    os.environ["TF_CONFIG"] = json.dumps(worker)


def multi_worker_strategy(timeout=None):
    """TensorFlow's `MultiWorkerMirroredStrategy` over the cluster (`TF_CONFIG` or `initialize`'s variables).

    Create it first in the script, then create and compile the model in
    its scope; each worker feeds its own rows (`process_shard`), and
    `SSLModel` gathers the declared outputs across all replicas.

    Args:
        timeout: seconds a collective waits for the other workers before
            failing (None: wait for ever, TensorFlow's default).

    Example:
        >>> strategy = keras_ssl.backend.processes.multi_worker_strategy()  # doctest: +SKIP
        >>> with strategy.scope():  # doctest: +SKIP
        ...     model = keras_ssl.SimCLR(encoder); model.compile()
    """
    if backend() != "tensorflow":
        raise NotImplementedError(
            f"`multi_worker_strategy` needs the TensorFlow backend (got {backend()}); on JAX use "
            "`initialize()` then `data_parallel()`."
        )
    import tensorflow as tf

    initialize()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


Training = collections.namedtuple("Training", ["scope", "own_rows"])
Training.__doc__ = """How a process trains with the others: build and compile the model in `scope()`; `own_rows`:
`fit` gets this process's rows of each global batch (`process_shard`), else the global batch, in float
(TensorFlow's workers average a first batch to build the model, and its collectives refuse uint8)."""


def process_training():
    """Sets up data parallelism over every process, once `initialize` has run; returns a `Training`.

    JAX: `DataParallel` over every process's devices, each process feeding its rows. TensorFlow: a
    `MultiWorkerMirroredStrategy` (build the model in its scope), every worker passing the global
    batch, which TensorFlow splits. PyTorch: each process feeds its rows. One process: nothing to do.

    Example:
        >>> training = keras_ssl.backend.processes.process_training()   # one process
        >>> training.own_rows
        True
        >>> with training.scope():
        ...     model = keras_ssl.SimCLR(encoder)
    """
    if process_count() == 1:
        return Training(contextlib.nullcontext, True)
    if backend() == "tensorflow":
        return Training(multi_worker_strategy().scope, False)
    if backend() == "jax":  # every process's devices, each process feeding its own rows (no auto-sharding)
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
    return Training(contextlib.nullcontext, True)


@contextlib.contextmanager
def alone():
    """A block that this process runs without the others (process 0 writing a checkpoint or the run).

    On JAX it leaves the data parallelism aside: variables that Keras makes while it saves would
    otherwise span every process's devices, which every process must create together.

    Example:
        >>> with keras_ssl.backend.processes.alone():
        ...     encoder.save("alone.keras")
    """
    distribution = keras.distribution.distribution() if process_count() > 1 and backend() == "jax" else None
    if distribution is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(distribution)


def process_index():
    """This process's index in the cluster; 0 when alone or before the backend's runtime has started.

    Example:
        >>> keras_ssl.backend.processes.process_index()   # one process
        0
    """
    name = backend()
    if name == "jax":
        import jax

        # Asking jax.process_index() first would start JAX's devices and forbid a later initialize.
        return jax.process_index() if jax.distributed.is_initialized() else 0
    if name == "torch":
        import torch.distributed as dist

        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    found = _from_tf_config(os.environ["TF_CONFIG"]) if os.environ.get("TF_CONFIG") else None
    return found[2] if found else 0


def process_count():
    """How many processes train together; 1 when alone or before the backend's runtime has started.

    Example:
        >>> keras_ssl.backend.processes.process_count()
        1
    """
    name = backend()
    if name == "jax":
        import jax

        return jax.process_count() if jax.distributed.is_initialized() else 1
    if name == "torch":
        import torch.distributed as dist

        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    found = _from_tf_config(os.environ["TF_CONFIG"]) if os.environ.get("TF_CONFIG") else None
    return found[1] if found else 1


def is_chief():
    """Whether this process writes the run directory, checkpoints and figures (process 0).

    Example:
        >>> keras_ssl.backend.processes.is_chief()   # one process: always
        True
    """
    return process_index() == 0


def process_shard(x, global_batch_size, index=None, count=None):
    """The rows process `index` of `count` feeds, so that each step's global batch is `x`'s next rows.

    Local batch `t` of process `p` is rows `[t * G + p * G / count, ...)` of
    `x` (`G` the global batch size): the processes' batches, concatenated in
    process order (the order of the global device mesh), are `x[t * G:(t + 1) * G]`.
    The last incomplete global batch is dropped, so no row is read twice.

    Args:
        x: an array (or anything sliceable with an index array) of `N` rows.
        global_batch_size: rows per step over all processes; divisible by `count`.
        index, count: this process and the number of processes (default:
            `process_index()`, `process_count()`).

    Returns:
        `(rows, local_batch_size)`: fit with `batch_size=local_batch_size` and `shuffle=False`
        to keep the global order (a shuffle draws the same order on every process).

    Example:
        >>> from keras_ssl.backend.processes import process_shard
        >>> rows, batch = process_shard(np.arange(10), 4, index=1, count=2)
        >>> rows.tolist(), batch   # global batches [0 1 2 3] [4 5 6 7]; process 1 feeds [2 3] then [6 7]
        ([2, 3, 6, 7], 2)
    """
    index = process_index() if index is None else int(index)
    count = process_count() if count is None else int(count)
    if global_batch_size < count or global_batch_size % count:
        raise ValueError(
            f"the global batch size ({global_batch_size}) must be a multiple of the number of processes ({count})."
        )
    local = global_batch_size // count
    steps = len(x) // global_batch_size
    rows = np.arange(steps * global_batch_size).reshape(steps, count, local)[:, index].reshape(-1)
    return x[rows], local
