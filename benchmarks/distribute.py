"""Multi-device scaling on CPU: SimCLR step time on 1 vs N virtual devices, 1 vs N processes, NT-Xent memory.

    python benchmarks/distribute.py                      # JAX and TF, 1 vs 4 devices, memory table
    python benchmarks/distribute.py --devices 2 --batch-size 128 --width 0.25
    python benchmarks/distribute.py --skip-memory
    python benchmarks/distribute.py --processes-only     # PyTorch: 1 vs 2 processes, communication share

The processes table starts 1, then N PyTorch processes (`torch_processes`, gloo on 127.0.0.1) that
train SimCLR with a small encoder on the same global batch (each process its share). The time in
the step's collectives (all-gathers of the declared outputs, the gradients' all-reduce, and with
`--sync-bn` BatchNorm's all-gathers) is measured twice: in the step (the wall time inside the
`torch.distributed` calls, which includes waiting for the slower process) and alone (the same
calls on tensors of the same shapes, replayed after training with no compute between them). The
share is the collectives alone over the step time.

Each step-time run is a fresh process: JAX gets N host devices from
`XLA_FLAGS=--xla_force_host_platform_device_count=N` and trains under
`keras_ssl.distribute.data_parallel`; TensorFlow splits its CPU into N logical
devices and trains inside `keras_ssl.distribute.mirrored_strategy`, gathering
embeddings across replicas. Virtual devices share the same cores, so on a CPU
the figures show the overhead of the distributed step (sharding, gathers,
all-reduces), not a speed-up; on N real accelerators the same code splits
the work N ways.

The memory table is NT-Xent's forward + backward on (B, 128) embeddings:
XLA's own buffer count for the compiled JAX function, and the peak RSS growth
of eager PyTorch, next to the size of the 2B x 2B float32 similarity matrix
that dominates it (memory grows as B^2).
"""

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time

import numpy as np


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=256, help="global batch")
    p.add_argument("--width", type=float, default=0.25, help="CIFAR ResNet-18 width multiplier")
    p.add_argument("--steps", type=int, default=4, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    p.add_argument("--backends", default="jax,tensorflow")
    p.add_argument("--memory-batches", default="256,512,1024,2048,4096")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--processes", type=int, default=2, help="the processes case: 1 vs this many")
    p.add_argument("--process-batch-size", type=int, default=64, help="global batch of the processes case")
    p.add_argument("--process-width", type=int, default=16, help="tiny_encoder width of the processes case")
    p.add_argument("--processes-only", action="store_true", help="only the processes table")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (processes case)")
    p.add_argument("--process-cases", default="1,N,N+sync", help="of the processes case; N+sync: synchronised BN")
    p.add_argument("--skip-processes", action="store_true")
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)  # BACKEND:N, or memory:BACKEND
    return p.parse_args()


def step_time(backend, devices, args):
    """Median seconds per SimCLR training step on `devices` devices."""
    if backend == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    import keras

    import keras_ssl
    from keras_ssl import distribute

    keras.utils.set_random_seed(0)
    scope = None
    if devices > 1 and backend == "jax":
        distribute.data_parallel(devices)
    elif devices > 1:
        scope = distribute.mirrored_strategy(devices).scope()
        scope.__enter__()
    encoder = keras_ssl.backbones.resnet18((32, 32, 3), stem="cifar", width=args.width)
    model = keras_ssl.SimCLR(encoder, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    if scope is not None:
        scope.__exit__(None, None, None)
    steps = args.steps + args.warmup
    x = np.random.default_rng(0).integers(0, 256, (args.batch_size * steps, 32, 32, 3), dtype="uint8")
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(keras.ops.convert_to_numpy(logs["loss"]))  # wait for the step to finish
            times.append(time.perf_counter() - self.start)

    model.fit(x, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[Timer()])
    return float(np.median(times[args.warmup :]))


_ORIGINAL = {}  # torch.distributed's own all_gather and all_reduce, under the timing wrappers


def _timed_collectives(log):
    """Wraps torch.distributed's all_gather and all_reduce to add their wall time to `log`, and note their tensors."""
    import torch.distributed as dist

    for name in ("all_gather", "all_reduce"):
        original = _ORIGINAL[name] = getattr(dist, name)

        def timed(*args, _original=original, _name=name, **kwargs):
            start = time.perf_counter()
            out = _original(*args, **kwargs)
            log["seconds"] += time.perf_counter() - start
            tensor = args[1] if _name == "all_gather" else args[0]
            log["calls"].append(
                (_name, tuple(tensor.shape), tensor.dtype, len(args[0]) if _name == "all_gather" else 0)
            )
            return out

        setattr(dist, name, timed)


def _replay(calls, repeats):
    """Median seconds of `calls` (the collectives of one step) run back to back on fresh tensors."""
    import torch

    original, times = _ORIGINAL, []
    for _ in range(repeats):
        original["all_reduce"](torch.zeros(1))  # the processes start together
        start = time.perf_counter()
        for name, shape, dtype, parts in calls:
            tensor = torch.ones(shape, dtype=dtype)
            if name == "all_gather":
                original[name]([torch.empty_like(tensor) for _ in range(parts)], tensor)
            else:
                original[name](tensor)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def process_step_time(count, rank, port, sync_bn, args):
    """Median step seconds, collectives' seconds in the step and alone, for process `rank` of `count`."""
    import torch

    # One thread each by default: on shared cores, more OpenMP threads than free cores stall each other.
    torch.set_num_threads(args.threads)
    import keras

    import keras_ssl
    from keras_ssl.backend import torch_processes

    log = {"seconds": 0.0, "calls": []}
    if count > 1:
        torch_processes.initialize(rank, count, "127.0.0.1", port, timeout=120)
        _timed_collectives(log)
    keras.utils.set_random_seed(0)
    local = args.process_batch_size // count
    size = 32
    model = keras_ssl.SimCLR(keras_ssl.backbones.tiny_encoder((size, size, 3), width=args.process_width), seed=0)
    if sync_bn:
        keras_ssl.layers.synchronize_batch_norm(model)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    steps = args.steps + args.warmup
    x = np.random.default_rng(rank).integers(0, 256, (local * steps, size, size, 3), dtype="uint8")
    times, comm, last = [], [], []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            log["seconds"], log["calls"] = 0.0, []
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(keras.ops.convert_to_numpy(logs["loss"]))
            times.append(time.perf_counter() - self.start)
            comm.append(log["seconds"])
            last[:] = log["calls"]

    model.fit(x, batch_size=local, epochs=1, shuffle=False, verbose=0, callbacks=[Timer()])
    alone = _replay(last, 5) if count > 1 else 0.0
    result = {
        "step": float(np.median(times[args.warmup :])),
        "in_step": float(np.median(comm[args.warmup :])),
        "alone": alone,
        "calls": len(last),
        "bytes": int(sum(np.prod(s) * torch.empty((), dtype=d).element_size() for _, s, d, _ in last)),
    }
    torch_processes.barrier()
    return result


def run_processes(count, sync_bn, args):
    """Starts `count` processes of the processes case; rank 0's result."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, KERAS_BACKEND="torch", OMP_NUM_THREADS=str(args.threads))
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    common += ["--process-batch-size", str(args.process_batch_size), "--process-width", str(args.process_width)]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--run", f"processes:{count}:{rank}:{port}:{int(sync_bn)}", *common],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank in range(count)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    lines = [line for line in outputs[0][0].splitlines() if line.startswith("{")]
    if any(p.returncode for p in procs) or not lines:
        print(f"{count} processes: failed\n" + "\n".join(err[-1500:] for _, err in outputs))
        return None
    return json.loads(lines[-1])["result"]


def processes_table(args):
    print(
        f"\nSimCLR step, PyTorch processes (gloo, 127.0.0.1), tiny_encoder width {args.process_width}, 32x32, "
        f"global batch {args.process_batch_size} (x2 views), {args.threads} thread(s) per process, {os.cpu_count()} CPUs"
    )
    header = ("processes", "batch/proc", "s/step", "img/s", "vs 1", "coll. in step", "coll. alone", "share", "MiB/step")
    print("{:>12s} {:>10s} {:>7s} {:>7s} {:>6s} {:>13s} {:>11s} {:>6s} {:>8s}".format(*header))
    one = None
    cases = [c.replace("N", str(args.processes)).partition("+") for c in args.process_cases.split(",")]
    for count, sync_bn in ((int(c[0]), bool(c[2])) for c in cases):
        r = run_processes(count, sync_bn, args)
        if r is None:
            continue
        one = one or r["step"]
        label = f"{count}" + (" + sync BN" if sync_bn else "")
        cells = (
            f"{label:>12s} {args.process_batch_size // count:10d} {r['step']:7.3f} "
            f"{args.process_batch_size / r['step']:7.1f} {one / r['step']:5.2f}x "
            f"{1e3 * r['in_step']:10.1f} ms {1e3 * r['alone']:8.1f} ms {r['alone'] / r['step']:6.1%} "
            f"{r['bytes'] / 2**20:8.2f}"
        )
        print(cells)


def nt_xent_memory(backend, batches):
    """Bytes needed by NT-Xent forward + backward at each batch size."""
    import keras

    from keras_ssl import losses

    rng = np.random.default_rng(0)
    out = {}
    if backend == "jax":
        import jax

        grad = jax.jit(jax.value_and_grad(lambda a, b: losses.nt_xent(a, b, 0.5), argnums=(0, 1)))
        for b in batches:
            z = jax.ShapeDtypeStruct((b, 128), "float32")
            stats = grad.lower(z, z).compile().memory_analysis()
            out[b] = int(stats.temp_size_in_bytes + stats.output_size_in_bytes + stats.argument_size_in_bytes)
        return out
    import torch

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for b in batches:  # increasing sizes: each peak passes the last
        z1, z2 = (torch.tensor(rng.normal(size=(b, 128)), dtype=torch.float32, requires_grad=True) for _ in "12")
        loss = losses.nt_xent(z1, z2, 0.5)
        loss.backward()
        keras.ops.convert_to_numpy(z1.grad)
        out[b] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        del z1, z2, loss
    return out


def run_child(run, args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    kind, value = run.split(":")
    if kind == "memory":
        env["KERAS_BACKEND"] = value
    else:
        env["KERAS_BACKEND"] = kind
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={value}"
    cmd = [
        sys.executable,
        __file__,
        "--run",
        run,
        "--batch-size",
        str(args.batch_size),
        "--width",
        str(args.width),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--memory-batches",
        args.memory_batches,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        print(f"{run}: failed\n{proc.stderr[-2000:]}")
        return None
    return json.loads(lines[-1])


def main():
    args = parse()
    if args.run and args.run.startswith("processes:"):
        count, rank, port, sync_bn = (int(v) for v in args.run.split(":")[1:])
        result = process_step_time(count, rank, port, bool(sync_bn), args)
        print(json.dumps({"run": args.run, "result": result}), flush=True)
        # Not the interpreter's exit: its teardown would meet the heartbeat thread inside a store call.
        os._exit(0)
    if args.processes_only:
        processes_table(args)
        return
    if args.run:
        kind, value = args.run.split(":")
        if kind == "memory":
            result = nt_xent_memory(value, [int(b) for b in args.memory_batches.split(",")])
        else:
            result = step_time(kind, int(value), args)
        print(json.dumps({"run": args.run, "result": result}))
        return

    print(
        f"SimCLR step, CIFAR ResNet-18 width {args.width}, global batch {args.batch_size} (x2 views), "
        f"{os.cpu_count()} CPUs; virtual devices share them"
    )
    print(f"{'backend':12s} {'devices':>7s} {'s/step':>8s} {'img/s':>8s} {'vs 1 device':>12s}")
    for backend in args.backends.split(","):
        one = None
        for devices in (1, args.devices):
            r = run_child(f"{backend}:{devices}", args)
            if r is None:
                continue
            seconds = r["result"]
            one = one or seconds
            print(f"{backend:12s} {devices:7d} {seconds:8.3f} {args.batch_size / seconds:8.1f} {one / seconds:11.2f}x")
    if not args.skip_processes:
        processes_table(args)
    if args.skip_memory:
        return
    print("\nNT-Xent forward + backward, embeddings (B, 128) float32; MiB")
    results = {b: run_child(f"memory:{b}", args) for b in ("jax", "torch")}
    print(f"{'B':>6s} {'2Bx2B matrix':>13s} {'JAX (XLA buffers)':>18s} {'torch (peak RSS +)':>19s}")
    for b in args.memory_batches.split(","):
        cells = [f"{(2 * int(b)) ** 2 * 4 / 2**20:13.1f}"]
        for name, width in (("jax", 18), ("torch", 19)):
            r = results[name]
            cells.append(f"{r['result'][b] / 2**20:{width}.1f}" if r else f"{'-':>{width}s}")
        print(f"{b:>6s} " + " ".join(cells))


if __name__ == "__main__":
    main()
