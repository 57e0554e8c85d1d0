"""Multi-device scaling on CPU: SimCLR step time on 1 vs N virtual devices, 1 vs N processes, NT-Xent memory.

    python benchmarks/distribute.py                      # JAX and TF, 1 vs 4 devices, memory table
    python benchmarks/distribute.py --devices 2 --batch-size 128 --width 0.25
    python benchmarks/distribute.py --skip-memory
    python benchmarks/distribute.py --processes-only     # 1 vs 2 processes per backend, communication share

The processes table (PyTorch, JAX and TensorFlow, each 1 then N processes on 127.0.0.1, and the
share of the step in collectives) is benchmarks/distribute_processes.py's; see its docstring.

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
import subprocess
import sys
import time

import distribute_processes  # this folder's: the processes table
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
    p.add_argument("--processes-only", action="store_true", help="only the processes table")
    p.add_argument("--skip-processes", action="store_true")
    distribute_processes.add_arguments(p)
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
    if args.processes_only:
        distribute_processes.processes_table(args)
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
        distribute_processes.processes_table(args)
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
