"""Multi-process scaling on CPU: SimCLR step time on 1 against N processes per backend, and the communication share.

    .venv/bin/python benchmarks/distribute_processes.py                   # PyTorch, JAX, TensorFlow: 1 vs 2
    .venv/bin/python benchmarks/distribute_processes.py --process-backends jax --steps 4
    .venv/bin/python benchmarks/distribute.py --processes-only            # the same table, from distribute.py

Each case starts fresh OS processes on 127.0.0.1 that join as `keras-ssl --num-processes` joins them:
the KERAS_SSL_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID variables, `keras_ssl.distribute.initialize`,
then `process_training`. PyTorch: `torch.distributed` (gloo); JAX: `jax.distributed` with gloo CPU
collectives and `DataParallel` over one CPU device per process; TensorFlow: `MultiWorkerMirroredStrategy`
(TF_CONFIG written from the variables). Every process trains SimCLR (`tiny_encoder`, 32x32, float32
images) on the same global batch, each its share, with one compute thread (`--threads`: PyTorch's
threads, TensorFlow's intra-op threads; JAX: Eigen single-threaded, XLA's CPU thread pool unlimited).

The communication share is the step's collectives replayed alone (the same calls on tensors of the
same shapes and dtypes, in the same processes after training, nothing else between them) over the
step time. How the step's collectives are found:
- PyTorch: `torch.distributed.all_gather` / `all_reduce` are wrapped while training, which also gives
  their wall time inside the step ("in step": it counts the wait for the slower process).
- JAX: XLA places them inside the compiled step: they are read from XLA's optimised HLO of the train
  step (`--xla_dump_to`) and replayed as `psum` / `all_gather` / `psum_scatter` / `ppermute` /
  `all_to_all` under `shard_map`.
- TensorFlow: `ReplicaContext.all_reduce` (the gradients' sum and keras_ssl's `gather` of the
  declared outputs, an all-reduce of zero-padded rows) and `strategy.reduce` (the logs' mean) note
  their tensors' shapes each step, and are replayed with the same calls in a `tf.function`. In the
  step: the step's time less that of the same step (a fresh model, traced again) with an identity of
  the same shape in place of each collective, so it also counts the wait for the slower worker.
No speed-up is expected on 2 shared cores: the figures bound what the distributed step costs.
"""

import argparse
import collections
import contextlib
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

BACKENDS = ("torch", "jax", "tensorflow")
# What `distribute.initialize` reads (keras_ssl/backend/processes.py): a caller's own would join its cluster.
LAUNCHER_VARIABLES = {"TF_CONFIG", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK"} | {
    f"{p}_{v}" for p in ("KERAS_SSL", "JAX", "KERAS_DISTRIBUTION") for v in ("NUM_PROCESSES", "PROCESS_ID")
}
LAUNCHER_VARIABLES |= {"KERAS_SSL_COORDINATOR", "JAX_COORDINATOR_ADDRESS", "KERAS_DISTRIBUTION_JOB_ADDRESSES"}
HOW = {
    "torch": "torch.distributed calls wrapped; in step: their wall time inside the step",
    "jax": "collectives read from XLA's optimised HLO of the train step; in step: not separable",
    "tensorflow": "ReplicaContext.all_reduce and strategy.reduce noted per step; in step: the step's time minus "
    "the same step's with an identity of the same shape in place of each collective (a fresh model)",
}


def add_arguments(p):
    """The processes case's options (shared with benchmarks/distribute.py)."""
    p.add_argument("--processes", type=int, default=2, help="the processes case: 1 vs this many")
    p.add_argument("--process-batch-size", type=int, default=64, help="global batch of the processes case")
    p.add_argument("--process-width", type=int, default=16, help="tiny_encoder width of the processes case")
    p.add_argument("--process-backends", default=",".join(BACKENDS))
    p.add_argument("--threads", type=int, default=1, help="compute threads per process (processes case)")
    p.add_argument("--process-cases", default="1,N,N+sync", help="N+sync: synchronised BN (PyTorch only)")
    p.add_argument("--replays", type=int, default=5, help="repeats of the collectives alone")


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    add_arguments(p)
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)  # BACKEND:COUNT:SYNC_BN, in a child
    return p.parse_args()


# --- PyTorch: the collectives, timed in the step and replayed --------------------------------------------

_ORIGINAL = {}  # the library's collectives, under the recording wrappers


def _record_torch(log):
    """Wraps torch.distributed's all_gather and all_reduce to add their wall time to `log`, and note their tensors."""
    import torch.distributed as dist

    for name in ("all_gather", "all_reduce"):
        original = _ORIGINAL[name] = getattr(dist, name)

        def timed(*args, _original=original, _name=name, **kwargs):
            start = time.perf_counter()
            out = _original(*args, **kwargs)
            log["seconds"] += time.perf_counter() - start
            tensor = args[1] if _name == "all_gather" else args[0]
            parts = len(args[0]) if _name == "all_gather" else 0
            log["calls"].append((_name, [(tuple(tensor.shape), str(tensor.dtype)[6:])], parts))
            return out

        setattr(dist, name, timed)


def _replay_torch(calls, repeats):
    import torch

    def once():
        for name, ((shape, dtype),), parts in calls:
            tensor = torch.ones(shape, dtype=getattr(torch, dtype))
            if name == "all_gather":
                _ORIGINAL[name]([torch.empty_like(tensor) for _ in range(parts)], tensor)
            else:
                _ORIGINAL[name](tensor)

    return _timed(once, lambda: _ORIGINAL["all_reduce"](torch.zeros(1)), repeats)


def _timed(once, sync, repeats):
    """Median seconds of `once()`, each run started together on every process (`sync()`) after one untimed run."""
    once()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# --- JAX: the collectives of XLA's compiled step, replayed under shard_map --------------------------------

_HLO_OP = re.compile(
    r"= (\([^()]*\)|\S+) (all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\("
)
_HLO_SHAPE = re.compile(r"\b(pred|[sufb]f?\d+)\[([\d,]*)\]")
_HLO_DTYPE = {"pred": "uint8", "bf16": "float16", "f16": "float16", "f32": "float32", "f64": "float64"}


def _hlo_collectives(folder, count):
    """`(kind, [(operand shape, dtype)], how)` of each collective in the dumped train step's optimised HLO.

    `how`: the dimension (all-gather, reduce-scatter, an array all-to-all; None for a tuple all-to-all, its
    operand i going to process i) or a collective-permute's (source, target) pairs."""
    files = glob.glob(os.path.join(folder, "*train_step*after_optimizations.txt"))
    if not files:
        raise RuntimeError(f"no train step HLO in {folder}: XLA's dump names changed?")
    ops = []
    with open(max(files, key=os.path.getmtime)) as f:
        for line in f:
            match = _HLO_OP.search(line)
            if match is None:
                continue
            kind, dim = match.group(2), re.search(r"dimensions=\{(\d+)\}", line)
            dim = int(dim.group(1)) if dim else None
            pairs = re.search(r"source_target_pairs=\{(.*?)\}\}", line)
            shapes = []
            for dtype, dims in _HLO_SHAPE.findall(match.group(1)):
                shape = [int(d) for d in dims.split(",") if d]
                # the operand each process sends: an all-gather's is 1/count of its result, a reduce-scatter's count x
                if kind in ("all-gather", "reduce-scatter"):
                    shape[dim] = shape[dim] // count if kind == "all-gather" else shape[dim] * count
                name = _HLO_DTYPE.get(dtype, dtype.replace("s", "int").replace("u", "uint"))
                shapes.append((tuple(shape), name))
            how = tuple(tuple(map(int, p)) for p in re.findall(r"(\d+),(\d+)", pairs.group(1))) if pairs else dim
            ops.append((kind, shapes, how))
    return ops


def _replay_jax(ops, repeats):
    import jax
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()), ("p",))  # one CPU device per process
    spec = NamedSharding(mesh, P("p"))
    # each process's operands, with a leading axis of 1 that the mesh splits
    args = [
        [jax.make_array_from_process_local_data(spec, np.ones((1, *s), d)) for s, d in shapes] for _, shapes, _ in ops
    ]

    def body(groups):
        out = []
        for (kind, _, how), group in zip(ops, groups):
            xs = [x[0] for x in group]
            if kind == "all-reduce":
                ys = jax.lax.psum(xs, "p")  # one variadic all-reduce, as XLA combined them
            elif kind == "all-gather":
                ys = [jax.lax.all_gather(x, "p", axis=how, tiled=True) for x in xs]
            elif kind == "reduce-scatter":
                ys = [jax.lax.psum_scatter(x, "p", scatter_dimension=how, tiled=True) for x in xs]
            elif kind == "collective-permute":
                ys = [jax.lax.ppermute(x, "p", perm=how) for x in xs]
            elif how is None:  # a tuple all-to-all: operand i to process i, as one array all-to-all
                ys = [jax.lax.all_to_all(jax.numpy.stack(xs), "p", 0, 0, tiled=True)]
            else:
                ys = [jax.lax.all_to_all(x, "p", how, how, tiled=True) for x in xs]
            out += [y[None] for y in ys]
        return out

    run = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P("p"),), out_specs=P("p"), check_vma=False))
    step = iter(range(10**6))
    return _timed(
        lambda: jax.block_until_ready(run(args)),
        lambda: multihost_utils.sync_global_devices(f"replay {next(step)}"),
        repeats,
    )


# --- TensorFlow: the strategy's all-reduces, noted each step and replayed ---------------------------------


def _record_tensorflow(strategy, log):
    """Notes the shapes of every `ReplicaContext.all_reduce` and `strategy.reduce` in the step, as it runs."""
    import tensorflow as tf

    def note(tensors):
        # Run time, not trace time: the batch dimension may be unknown when the step is traced.
        def append(*shapes):
            log["calls"].append(("all_reduce", [(tuple(s), t.dtype.name) for s, t in zip(shapes, tensors)], 0))
            return np.int32(0)

        return tf.numpy_function(append, [tf.shape(t) for t in tensors], tf.int32)

    context = tf.distribute.ReplicaContext
    original = _ORIGINAL["all_reduce"] = context.all_reduce

    def all_reduce(self, reduce_op, value, options=None):
        with tf.control_dependencies([note([tf.convert_to_tensor(t) for t in tf.nest.flatten(value)])]):
            if log["identity"]:
                return tf.nest.map_structure(tf.identity, value)
            return original(self, reduce_op, value, options)

    reduce = strategy.reduce

    def strategy_reduce(reduce_op, value, axis=None):
        local = strategy.experimental_local_results(value)[0]
        with tf.control_dependencies([note([local])]):
            return tf.identity(local) if log["identity"] else reduce(reduce_op, value, axis)

    context.all_reduce, strategy.reduce = all_reduce, strategy_reduce


def _replay_tensorflow(strategy, calls, repeats):
    import tensorflow as tf

    total = tf.distribute.ReduceOp.SUM

    @tf.function
    def collectives():
        context = tf.distribute.get_replica_context()
        out = [_ORIGINAL["all_reduce"](context, total, [tf.ones(s, d) for s, d in shapes]) for _, shapes, _ in calls]
        return tf.add_n([tf.reduce_sum(tf.cast(t, "float32")) for t in tf.nest.flatten(out)])

    @tf.function
    def sync():
        return _ORIGINAL["all_reduce"](tf.distribute.get_replica_context(), total, tf.zeros(()))

    def run(fn):
        return strategy.experimental_local_results(strategy.run(fn))[0].numpy()

    return _timed(lambda: run(collectives), lambda: run(sync), repeats)


# --- one process of a case ---------------------------------------------------------------------------------


def train(training, sync_bn, log, args):
    """Trains SimCLR `args.steps + args.warmup` steps: each timed step's seconds and collectives' seconds, the
    last step's collectives."""
    import keras

    import keras_ssl
    from keras_ssl import distribute

    keras.utils.set_random_seed(0)
    size, global_batch = 32, args.process_batch_size
    with training.scope():
        model = keras_ssl.SimCLR(keras_ssl.backbones.tiny_encoder((size, size, 3), width=args.process_width), seed=0)
        if sync_bn:
            keras_ssl.layers.synchronize_batch_norm(model)
        model.compile(optimizer=keras.optimizers.SGD(0.01))
    x = np.random.default_rng(0).uniform(size=(global_batch * (args.steps + args.warmup), size, size, 3))
    x = x.astype("float32")  # every process draws the global batches; TensorFlow's workers split them themselves
    x, batch = distribute.process_shard(x, global_batch) if training.own_rows else (x, global_batch)
    times, comm, last = [], [], []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            log["seconds"], log["calls"] = 0.0, []
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(keras.ops.convert_to_numpy(logs["loss"]))  # wait for the step to finish
            times.append(time.perf_counter() - self.start)
            comm.append(log["seconds"])
            last[:] = log["calls"]

    model.fit(x, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[Timer()])
    return float(np.median(times[args.warmup :])), float(np.median(comm[args.warmup :])), last


def child(backend, count, sync_bn, args):
    """Median step seconds, the collectives' seconds in the step (where measured) and alone, their count and bytes."""
    hlo = tempfile.mkdtemp(prefix="keras_ssl_hlo_") if backend == "jax" else None
    if backend == "jax":  # before JAX starts: the compiled step's HLO, for its collectives
        # Eigen on one thread; XLA's own CPU thread pool has no limit (its intra_op_parallelism_threads,
        # often quoted, ends XLA_FLAGS' parsing: the flags after it are dropped).
        multi_thread = str(args.threads > 1).lower()
        os.environ["XLA_FLAGS"] = (
            f"--xla_cpu_multi_thread_eigen={multi_thread} "
            f"--xla_dump_to={hlo} --xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*train_step.*"
        )
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    else:
        import torch

        torch.set_num_threads(args.threads)
    from keras_ssl import distribute

    distribute.initialize(timeout=120)
    training = distribute.process_training()
    log, strategy = {"seconds": 0.0, "calls": [], "identity": False}, None
    if count > 1 and backend == "torch":
        _record_torch(log)
    elif count > 1 and backend == "tensorflow":
        with training.scope():
            strategy = tf.distribute.get_strategy()
        _record_tensorflow(strategy, log)
    step, in_step, last = train(training, sync_bn, log, args)
    if backend == "jax":
        last = _hlo_collectives(hlo, count) if count > 1 else []
    alone = 0.0
    if count > 1:
        replay = {"torch": _replay_torch, "jax": _replay_jax}.get(backend)
        alone = replay(last, args.replays) if replay else _replay_tensorflow(strategy, last, args.replays)
    if backend == "tensorflow" and count > 1:
        log["identity"] = True  # a fresh model, traced with an identity in place of every collective
        in_step = step - train(training, sync_bn, log, args)[0]
    elif backend != "torch":
        in_step = None
    nbytes = sum(int(np.prod(s)) * np.dtype(d).itemsize for _, shapes, _ in last for s, d in shapes)
    kinds = collections.Counter(kind.replace("_", "-") for kind, _, _ in last)
    if hlo:
        shutil.rmtree(hlo, ignore_errors=True)  # after the replay, whose compilations XLA dumps there too
    return {"step": step, "in_step": in_step, "alone": alone, "kinds": dict(kinds)}, len(last), nbytes


def free_ports(n):
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def run_case(backend, count, sync_bn, args):
    """Starts the `count` processes of a case; process 0's result, or None (their logs printed) if one failed."""
    # TensorFlow needs every worker's address; JAX and PyTorch the coordinator's (process 0's).
    addresses = ",".join(f"127.0.0.1:{p}" for p in free_ports(count if backend == "tensorflow" else 1))
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}  # the caller's own cluster
    env = dict(env, KERAS_BACKEND=backend, OMP_NUM_THREADS=str(args.threads), TF_CPP_MIN_LOG_LEVEL="3")
    forward = [f"--{k}={getattr(args, k.replace('-', '_'))}" for k in ("steps", "warmup", "threads", "replays")]
    forward += [f"--process-batch-size={args.process_batch_size}", f"--process-width={args.process_width}"]
    with tempfile.TemporaryDirectory() as folder:
        procs = []
        for rank in range(count):
            cluster = dict(KERAS_SSL_COORDINATOR=addresses, KERAS_SSL_NUM_PROCESSES=str(count))
            cluster = dict(cluster, KERAS_SSL_PROCESS_ID=str(rank)) if count > 1 else {}
            # files, not pipes: a full pipe would block one process inside a collective the others wait in
            out = open(os.path.join(folder, f"{rank}.log"), "w+")
            command = [sys.executable, os.path.abspath(__file__), f"--run={backend}:{count}:{int(sync_bn)}", *forward]
            procs.append((subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**env, **cluster}), out))
        deadline = time.time() + 300
        # until all are done, one fails (the others would wait for it in a collective) or the time is up
        while time.time() < deadline and not any(p.poll() for p, _ in procs) and None in [p.poll() for p, _ in procs]:
            time.sleep(0.5)
        codes = [p.poll() for p, _ in procs]
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        texts = []
        for _, out in procs:
            out.seek(0)
            texts.append(out.read())
            out.close()
    lines = [line for line in texts[0].splitlines() if line.startswith('{"result"')]
    if any(codes) or None in codes or not lines:
        print(f"{backend}, {count} processes: failed\n" + "\n".join(t[-1500:] for t in texts))
        return None
    return json.loads(lines[-1])["result"]


def processes_table(args):
    print(
        f"\nSimCLR step, 1 vs {args.processes} processes on 127.0.0.1 (same global batch {args.process_batch_size}, "
        f"x2 views), tiny_encoder width {args.process_width}, 32x32, {args.threads} thread(s) per process, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    header = ("backend", "processes", "batch/proc", "s/step", "img/s", "vs 1", "coll. in step", "coll. alone")
    print(
        "{:10s} {:>12s} {:>10s} {:>7s} {:>7s} {:>6s} {:>13s} {:>11s} {:>6s} {:>5s} {:>8s} {:>5s}".format(
            *header, "share", "calls", "MiB/step", "load"
        )
    )
    cases = [c.replace("N", str(args.processes)).partition("+") for c in args.process_cases.split(",")]
    kinds = {}
    for backend in args.process_backends.split(","):
        one = None
        for count, sync_bn in ((int(c[0]), bool(c[2])) for c in cases):
            if sync_bn and backend != "torch":
                continue  # JAX's compiled step already sees the global batch; TF refuses synchronised BN
            r = run_case(backend, count, sync_bn, args)
            if r is None:
                continue
            r, calls, nbytes = r
            kinds[backend] = kinds.get(backend) or ", ".join(f"{n} {k}" for k, n in r["kinds"].items())
            one = one or r["step"]
            label = f"{count}" + (" + sync BN" if sync_bn else "")
            in_step = f"{1e3 * r['in_step']:10.1f} ms" if r["in_step"] is not None and count > 1 else f"{'-':>13s}"
            print(
                f"{backend:10s} {label:>12s} {args.process_batch_size // count:10d} {r['step']:7.3f} "
                f"{args.process_batch_size / r['step']:7.1f} {one / r['step']:5.2f}x {in_step} "
                f"{1e3 * r['alone']:8.1f} ms {r['alone'] / r['step']:6.1%} {calls:5d} {nbytes / 2**20:8.2f} {os.getloadavg()[0]:5.1f}"
            )
    print("coll. alone: the step's collectives replayed alone; load: 1-minute load average after the case")
    for backend in args.process_backends.split(","):
        print(f"  {backend} ({kinds.get(backend) or 'no collective'} a step): {HOW[backend]}")
    print("  MiB/step: what each process sends in (its operands); calls: collectives per step")


def main():
    args = parse()
    if args.run:
        backend, count, sync_bn = args.run.split(":")
        result = child(backend, int(count), bool(int(sync_bn)), args)
        print(json.dumps({"result": result}), flush=True)
        if backend == "torch":
            # Not the interpreter's exit: its teardown would meet the heartbeat thread inside a store call.
            os._exit(0)
        return
    processes_table(args)


if __name__ == "__main__":
    main()
