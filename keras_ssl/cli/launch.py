"""`keras-ssl pretrain` on many processes: the local launcher (`--num-processes N`), and how each
process joins the others, whoever started them (this launcher, torchrun, TF_CONFIG, JAX's variables).

The launcher locks --output, starts N copies of the same command on 127.0.0.1, each told its place
by `KERAS_SSL_COORDINATOR`/`_NUM_PROCESSES`/`_PROCESS_ID`, and waits for them; when one is lost it
stops the others and names it. Process 0 (`is_chief()`) takes the lock over and alone writes the run
directory; every process trains (a streamed folder or file list: on its own files, `stream_share`; JAX and
PyTorch), and restores the same checkpoint when the run resumes.
"""

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from keras_ssl import data, distribute
from keras_ssl.backend import processes
from keras_ssl.checkpoints import list_checkpoints
from keras_ssl.cli.parser import build_parser
from keras_ssl.cli.rundata import _is_stream
from keras_ssl.rundir import RunLock, check_writable_dir

Team = collections.namedtuple("Team", ["chief", "index", "count", "scope", "own_rows", "handed_by"])
Team.__doc__ = """This process among those that train together: `chief` (process 0, which writes the run),
`index`, `count`, `scope()` (build and compile the model in it), `own_rows` (`fit` gets this process's rows
of each global batch, `ProcessBatches`) and `handed_by` (the launcher's pid, whose lock the chief takes over)."""

_STOP_GRACE_S = 10  # seconds a stopped process gets to exit before it is killed


def launching(args):
    """Whether this `pretrain` launches processes (`--num-processes` above 1, and none started it).

    Example:
        >>> from keras_ssl.cli import build_parser
        >>> from keras_ssl.cli.launch import launching
        >>> launching(build_parser().parse_args(["pretrain", "--num-processes", "2"]))
        True
        >>> launching(build_parser().parse_args(["pretrain"]))
        False
    """
    return (args.num_processes or 1) > 1 and _cluster() is None


def _cluster():
    try:
        return processes.cluster()
    except ValueError as e:
        raise SystemExit(f"keras-ssl: {e}") from None


def check(args, method, count):
    """Stops, before any process starts work, a run that `count` processes cannot train.

    Example:
        >>> from keras_ssl.cli import build_parser
        >>> from keras_ssl.cli.launch import check
        >>> args = build_parser().parse_args(["pretrain", "--batch-size", "10", "--num-processes", "4"])
        >>> check(args, keras_ssl.SimCLR, 4)
        Traceback (most recent call last):
        ...
        SystemExit: keras-ssl: --batch-size 10 is the global batch: it must be a multiple of the 4 processes.
    """
    if count == 1:
        return
    if args.batch_size % count:
        raise SystemExit(
            f"keras-ssl: --batch-size {args.batch_size} is the global batch: it must be a multiple of the "
            f"{count} processes."
        )
    if method.needs_labels or method.needs_indices:
        raise SystemExit(
            f"keras-ssl: --method {args.method} keeps a label or an index with each image, which several "
            "processes do not share yet: train it in one process."
        )
    # Keras's multi-worker fit reduces a PyDataset's first (x,) batch, which TensorFlow's collectives refuse.
    if _is_stream(args.data or "") and distribute.backend() == "tensorflow":
        raise SystemExit(
            f"keras-ssl: --data {args.data} is streamed from files, which TensorFlow's workers do not share out "
            "yet: use an .npz (or cifar10, mnist), one process, or the JAX or PyTorch backend."
        )


def command_line(args):
    """The arguments of `keras-ssl` that give the Namespace `args` of `pretrain` (each process runs them).

    Example:
        >>> from keras_ssl.cli import build_parser
        >>> from keras_ssl.cli.launch import command_line
        >>> args = build_parser().parse_args(["pretrain", "--epochs", "2", "--no-plots", "--output", "runs/x"])
        >>> argv = command_line(args)
        >>> "--epochs=2" in argv, "--no-plots" in argv, vars(build_parser().parse_args(argv)) == vars(args)
        (True, True, True)
        >>> args = build_parser().parse_args(["pretrain", "--option", "a=1", "--option", "b=(1, 2)"])
        >>> vars(build_parser().parse_args(command_line(args))) == vars(args)
        True
    """
    defaults = vars(build_parser().parse_args(["pretrain"]))
    argv = ["pretrain"]
    for name, value in sorted(vars(args).items()):
        if name == "command" or value is None or (defaults.get(name) is False and not value):
            continue
        flag = "--" + name.replace("_", "-")  # --flag=value below: a value may start with "-"
        if defaults.get(name) is False:
            argv.append(flag)
        else:  # a repeatable flag (--option) once per item
            argv += [f"{flag}={v}" for v in (value if isinstance(value, list) else [value])]
    return argv


def launch(args, method, command=None):
    """Runs `keras-ssl pretrain` as `args.num_processes` processes on this machine, as one run.

    Each process runs the same command (`command_line(args)`), told its place
    by `KERAS_SSL_COORDINATOR` (every process's `127.0.0.1:port`),
    `KERAS_SSL_NUM_PROCESSES` and `KERAS_SSL_PROCESS_ID`; their output is
    this process's. The launcher holds --output's lock until process 0 takes
    it over. When a process is lost (killed, or an error) the others are
    stopped and the launch fails with one line naming it.

    Args:
        args: the Namespace of `build_parser()` for `pretrain`.
        method: the `--method`'s class.
        command: the program each process runs, followed by the arguments
            (default: this Python running `keras_ssl.cli`).

    Returns:
        0, once every process ended well.

    Example:
        >>> from keras_ssl.cli import build_parser
        >>> from keras_ssl.cli.launch import launch
        >>> args = build_parser().parse_args(["pretrain", "--num-processes", "2", "--output", "runs/two"])
        >>> launch(args, keras_ssl.SimCLR)  # doctest: +SKIP
        keras-ssl: started 2 processes on 127.0.0.1, pids 4242 4243 (process 0 writes runs/two)
        ...
        0
    """
    count = args.num_processes
    check(args, method, count)
    command = list(command or [sys.executable, "-m", "keras_ssl.cli"]) + command_line(args)
    created = not os.path.exists(args.output)
    check_writable_dir(args.output)
    env = dict(os.environ, KERAS_SSL_COORDINATOR=",".join(f"127.0.0.1:{p}" for p in _free_ports(count)))
    env["KERAS_SSL_NUM_PROCESSES"] = str(count)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))  # as torchrun: no oversubscribing
    loopback = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    if loopback:
        env.setdefault("GLOO_SOCKET_IFNAME", loopback[0])  # gloo would pick the host name's interface
    workers, lost = [], None
    try:
        with RunLock(args.output), _interrupts_stop(workers):
            for index in range(count):
                workers.append(subprocess.Popen(command, env=dict(env, KERAS_SSL_PROCESS_ID=str(index))))
            pids = " ".join(str(w.pid) for w in workers)
            print(f"keras-ssl: started {count} processes on 127.0.0.1, pids {pids} (process 0 writes {args.output})")
            sys.stdout.flush()
            lost = _wait(workers)
    finally:
        _stop(workers)
        if created and os.path.isdir(args.output) and not os.listdir(args.output):
            os.rmdir(args.output)  # failed before writing anything: leave no trace
    if lost is None:
        return 0
    index, code = lost
    how = f"was lost (killed by signal {-code}, {_signal_name(-code)})" if code < 0 else f"failed (exit status {code})"
    if list_checkpoints(os.path.join(args.output, "checkpoint")):
        then = "rerun the same command to resume from the last checkpoint"
    else:
        then = "rerun the same command to start again" if code < 0 else "its error is above"
    raise SystemExit(f"keras-ssl: process {index} of {count} {how} and the others were stopped; {then}.")


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait(workers):
    """Waits for every worker; `(index, return code)` of the first that failed, or None."""
    while True:
        codes = [w.poll() for w in workers]
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:  # a process killed by a signal is the cause; the others' errors may follow from it
            return min(failed, key=lambda f: (f[1] >= 0, f[0]))
        if all(c == 0 for c in codes):
            return None
        time.sleep(0.1)


def _stop(workers):
    """Terminates the workers still running, then kills those that do not exit in time."""
    for w in workers:
        if w.poll() is None:
            w.terminate()
    deadline = time.time() + _STOP_GRACE_S
    for w in workers:
        try:
            w.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()


@contextlib.contextmanager
def _interrupts_stop(workers):
    """SIGTERM to the launcher stops the workers too (Ctrl-C reaches them through the terminal)."""

    def stop(number, frame):
        _stop(workers)
        raise SystemExit(f"keras-ssl: stopped by {_signal_name(number)}; rerun the same command to resume.")

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: no handler
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def join(args, method):
    """Joins the processes this one was started with (by `launch` or an outside launcher); a `Team`.

    Call it first: it starts the backend's runtime (`distribute.initialize`)
    and its data parallelism (`processes.process_training`). Alone, it does nothing.

    Example:
        >>> from keras_ssl.cli import build_parser
        >>> from keras_ssl.cli.launch import join
        >>> team = join(build_parser().parse_args(["pretrain"]), keras_ssl.SimCLR)   # no launcher: one process
        >>> team.chief, team.index, team.count
        (True, 0, 1)
    """
    found = _cluster()
    if found is None:
        return Team(True, 0, 1, contextlib.nullcontext, True, None)
    if args.num_processes not in (None, found.num_processes):
        raise SystemExit(
            f"keras-ssl: --num-processes {args.num_processes}, but {found.source} says {found.num_processes} "
            "processes were started: leave --num-processes out under an outside launcher."
        )
    check(args, method, found.num_processes)
    processes.initialize()
    training = processes.process_training()
    ours = found.source == "KERAS_SSL_COORDINATOR"
    return Team(
        processes.is_chief(),
        processes.process_index(),
        processes.process_count(),
        training.scope,
        training.own_rows,
        os.getppid() if ours else None,
    )


def fit_images(team, images, value_range):
    """`(images, value_range)` as this process's `fit` takes them: float images where the backend splits the batch.

    TensorFlow's workers average the first batch to build the model and its
    collectives refuse uint8: uint8 images become float32 in a 0-255 range.

    Example:
        >>> from keras_ssl.cli.launch import Team, fit_images
        >>> import contextlib
        >>> tensorflow = Team(True, 0, 2, contextlib.nullcontext, False, None)
        >>> images, value_range = fit_images(tensorflow, x_small, None)
        >>> images.dtype, value_range
        (dtype('float32'), [0.0, 255.0])
    """
    if team.count == 1 or team.own_rows or not isinstance(images, np.ndarray) or images.dtype == "float32":
        return images, value_range
    if value_range is None and images.dtype == np.uint8:
        value_range = [0.0, 255.0]
    return images.astype("float32"), value_range


def fit_rows(team, images, batch_size, seed):
    """`(x, batch_size)` for this process's `fit`: its rows of every global batch where needed.

    Where each process feeds its rows (JAX, PyTorch): arrays become
    `ProcessBatches`, a stream (`data.ImageFiles` in global batches, as
    `rundata` opens it) this process's files of each (`stream_share`).
    TensorFlow's strategy splits the global batch of arrays itself.

    Example:
        >>> from keras_ssl.cli.launch import Team, fit_rows
        >>> import contextlib
        >>> x, batch_size = fit_rows(Team(False, 1, 2, contextlib.nullcontext, True, None), x_train, 16, seed=0)
        >>> type(x).__name__, x[0][0].shape, batch_size
        ('ProcessBatches', (8, 16, 16, 3), None)
    """
    if team.count > 1 and team.own_rows and isinstance(images, data.ImageFiles):
        return stream_share(team, images), None
    if team.count == 1 or not team.own_rows:  # one process, or TensorFlow, which splits the global batch itself
        return images, batch_size
    if len(images) < batch_size:
        raise SystemExit(f"keras-ssl: {len(images)} training images are fewer than one --batch-size {batch_size}.")
    return ProcessBatches(images, batch_size, seed, team.index, team.count), None


class ProcessBatches(data.ArrayBatches):
    """This process's rows of each global batch that `data.ArrayBatches(x, batch_size, seed=seed)` gives.

    Every process draws the same order (the seed and the epoch), and process
    `index` takes its share of each batch (`process_shard`): the processes'
    batches, in process order, are the one-process batches.

    Args:
        x: the images.
        batch_size: the global batch size, a multiple of `count`.
        seed: seed of the order.
        index, count: this process and the number of processes.

    Example:
        >>> from keras_ssl.cli.launch import ProcessBatches
        >>> one = keras_ssl.data.ArrayBatches(x_train, batch_size=16, seed=0)
        >>> parts = [ProcessBatches(x_train, 16, seed=0, index=i, count=2) for i in (0, 1)]
        >>> parts[1][0][0].shape, np.array_equal(np.concatenate([p[0][0] for p in parts]), one[0][0])
        ((8, 16, 16, 3), True)
    """

    def __init__(self, x, batch_size, seed, index, count):
        # Full batches only, as `fit` cuts arrays: the order is then a permutation of the same rows.
        super().__init__(x[: len(x) - len(x) % batch_size], batch_size=batch_size, seed=seed)
        self.index, self.count = index, count

    def __getitem__(self, i):
        (x,) = super().__getitem__(i)
        return (processes.process_shard(x, self.batch_size, self.index, self.count)[0],)


def stream_share(team, stream):
    """This process's part of `stream`, an `ImageFiles` read in global batches: no file read twice in an epoch.

    Each epoch's order is one permutation of every file (seed and epoch: the same on every process),
    cut into global batches of `stream.batch_size`; process `index` reads block `index` of `batch_size
    // count` files of each (`data.files.process_batches`): in process order, the one-process batches.

    Args:
        team: this process (`join`).
        stream: a `data.ImageFiles` of every file (`shard=False`), its
            `batch_size` the global batch, a multiple of `team.count`.

    Example:
        >>> from PIL import Image
        >>> from keras_ssl.cli.launch import Team, stream_share
        >>> import contextlib
        >>> files = [f"{i}.png" for i in range(64)]
        >>> for path, image in zip(files, x_train): Image.fromarray(image).save(path)
        >>> every = keras_ssl.data.ImageFiles(files, image_size=16, batch_size=16, shard=False)   # global batches
        >>> parts = [stream_share(Team(i == 0, i, 2, contextlib.nullcontext, True, None), every) for i in (0, 1)]
        >>> parts[1][0][0].shape, np.array_equal(np.concatenate([p[0][0] for p in parts]), every[0][0])
        ((8, 16, 16, 3), True)
    """
    every = np.arange(len(stream.files))
    return stream.subset(every, batch_size=stream.batch_size // team.count, shard=(team.index, team.count))
