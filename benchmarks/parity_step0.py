"""Step-0 loss parity: keras_ssl's methods vs parity.py's PyTorch references, on the same weights, views and state.

    python benchmarks/parity_step0.py --methods simclr --backends torch
    python benchmarks/parity_step0.py                                  # every method, torch and tensorflow
    python benchmarks/parity_step0.py --methods byol,moco2 --backends jax --rtol 1e-5
    python benchmarks/parity_step0.py --methods nnclr --torch-bn joint  # the reference's BatchNorm as keras_ssl's
    python benchmarks/parity_step0.py --side torch:byol --workdir /tmp/p0  # one side, as the driver runs it

For each method a fresh process builds the reference as parity.run_torch does
(torch_methods.build with parity's method_options, `--init`, `--width`, `--torch-bn`), draws its
views of the first `--batch-size` CIFAR-10 training images, records the random state that keras_ssl
would draw differently (`SYNC`) and computes its loss at step 0 (`before_step(0)`, `loss(views, 0)`).
Its initial weights (keras_weights), views and state go to `--workdir`. Then a fresh process per
Keras backend builds keras_ssl's model as parity.run_keras does, loads the weights with
parity.load_init (targets := online; `init check`: the encoders' max abs difference on 8 images),
replays the state and computes what the engine's train step computes at step 0 (model.step 0):
`_update_targets()`, `ssl_forward(views, training=True)`, `compute_ssl_loss`. PASS when
|keras_ssl - reference| <= `--atol` + `--rtol` |reference| (as numpy.allclose: the SimSiam family's
losses start near 0.005, where float32's last digits are a large share of the value).

W-MSE whitens sub-batches of `w_size` rows (128 by default, more than its projection_dim 64),
so its batch is `--batch-size` rounded up to a multiple of w_size: 128 by default. A smaller one
on both sides: `--methods wmse --options '{"w_size": 16, "projection_dim": 8}'` (batch 16).
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from unittest import mock

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 100  # the nominal run (epoch) length both sides' schedules see; step 0 is all they use


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=None, help="comma list (default: all of parity.KERAS_CLASSES)")
    p.add_argument("--backends", default="torch,tensorflow", help="comma list of Keras backends")
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--init", choices=("keras", "torch", "torchvision"), default="torchvision")
    p.add_argument("--torch-bn", choices=("official", "joint"), default="official", help="as parity.py's")
    p.add_argument("--options", default=None, help="JSON of method options for both sides, as parity.py's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--atol", type=float, default=1e-6)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    p.add_argument("--workdir", default=None, help="default: a new temp dir")
    p.add_argument("--side", default=None, help="one side: torch:METHOD or keras:BACKEND:METHOD")
    return p.parse_args(argv)


def batch_size(args, name, options):
    w = options.get("w_size", 128) if name == "wmse" else 1  # W-MSE: whole sub-batches of w_size rows
    return -(-args.batch_size // w) * w


def npz_path(args, name):
    return os.path.join(args.workdir, f"step0_{name}.npz")


# ---------------------------------------------------------------------- state syncing
# SYNC[method] = (torch hook, keras hook): context managers around each side's loss; the torch hook
# records into `state` (saved with the views), the keras hook replays it.


@contextlib.contextmanager
def no_sync(_, state):
    yield


@contextlib.contextmanager
def moco2_torch(method, state):
    import torch

    state["queue"] = method.queue.numpy().copy()  # random unit rows on both sides: keras_ssl gets these
    # Shuffle-BN's random key permutation: the reference draws (one draw of many) keras_ssl's fixed
    # interleave, split_batch(interleave=True)'s sub-batch g = the rows i with i % num_splits == g.
    interleave = lambda n, **_: torch.arange(n).reshape(n // method.splits, method.splits).T.reshape(-1)
    with mock.patch.object(torch, "randperm", interleave):
        yield


@contextlib.contextmanager
def moco2_keras(model, state):
    model.queue.queue.assign(state["queue"])  # the pointer is 0 on both sides at step 0
    yield


@contextlib.contextmanager
def nnclr_torch(method, state):
    state["queue"] = method.queue.numpy().copy()  # the support set starts as random unit rows on both sides
    yield


@contextlib.contextmanager
def nnclr_keras(model, state):
    model.support.queue.assign(state["queue"])
    yield


@contextlib.contextmanager
def tico_torch(method, state):
    state["C"] = method.C.numpy().copy()  # zeros on both sides at step 0; copied so any later C would match
    yield


@contextlib.contextmanager
def tico_keras(model, state):
    model.covariance.assign(state["C"])
    yield


@contextlib.contextmanager
def wmse_torch(method, state):
    import torch

    perms, randperm = [], torch.randperm

    def recorded(*a, **k):  # the sub-batches' random rows: the reference's draws (w_iter of them)...
        perms.append(randperm(*a, **k))
        return perms[-1]

    with mock.patch.object(torch, "randperm", recorded):
        yield
    state["perms"] = np.stack([p.numpy() for p in perms]).astype("int32")


@contextlib.contextmanager
def wmse_keras(model, state):
    import keras

    perms = iter(state["perms"])  # ...and replay them in place of keras.random.shuffle's
    with mock.patch.object(keras.random, "shuffle", lambda *a, **k: keras.ops.convert_to_tensor(next(perms))):
        yield


@contextlib.contextmanager
def ressl_torch(method, state):
    state["queue"] = method.queue.T.numpy().copy()  # the reference's (dim, K) unit columns, as keras_ssl's rows
    yield


@contextlib.contextmanager
def ressl_keras(model, state):
    model.queue.queue.assign(state["queue"])
    yield


SYNC = {
    "moco2": (moco2_torch, moco2_keras),
    "nnclr": (nnclr_torch, nnclr_keras),
    "nnbyol": (nnclr_torch, nnclr_keras),  # the same support set of random unit rows
    "nnsiam": (nnclr_torch, nnclr_keras),
    "ressl": (ressl_torch, ressl_keras),
    "tico": (tico_torch, tico_keras),
    "wmse": (wmse_torch, wmse_keras),
}
# Methods whose step-0 loss rests on random state SYNC cannot share: method -> why (reported, not
# failed). None so far: the methods without a hook draw nothing at step 0 beyond the views (DINO's
# centre starts at zeros, SwAV's Sinkhorn is deterministic, VIbCReg's running statistics go unused).
NOT_COMPARABLE = {}


# ---------------------------------------------------------------------------- sides


def run_torch(args, name):
    import parity
    import torch
    import torch_methods

    torch.set_num_threads(args.threads)
    options = parity.shared_options(args, name)
    method = torch_methods.build(name, args.width, options, args.init, STEPS, STEPS, args.seed)
    method.joint_views = args.torch_bn == "joint"
    path = os.path.join(os.environ.get("KERAS_SSL_DATA_DIR", "/work/shared/data"), "cifar10.npz")
    x = np.load(path)["x_train"][: batch_size(args, name, options)]
    check_h = parity.torch_features(method, x[:8])  # as parity.run_torch: before any training forward
    weights = method.keras_weights()
    method.before_step(0)
    with torch.no_grad():
        views = method.views(parity.torch_images(x), torch_methods.views_generator(args.seed))
    state = {}
    with SYNC.get(name, (no_sync,))[0](method, state):
        loss = float(method.loss(views, 0).detach())
    views = {f"view/{i}": v.permute(0, 2, 3, 1).contiguous().numpy() for i, v in enumerate(views)}
    state = {f"state/{k}": v for k, v in state.items()}
    np.savez(npz_path(args, name), check_x=x[:8], check_h=check_h, **weights, **views, **state)
    return {"loss": loss, "batch": len(x)}


def limit_threads(backend, n):
    if backend == "jax":
        os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={n}")
    elif backend == "torch":
        import torch

        torch.set_num_threads(n)
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)


def run_keras(args, backend, name):
    os.environ["KERAS_BACKEND"] = backend
    limit_threads(backend, args.threads)
    import keras
    import parity

    keras.utils.set_random_seed(args.seed)
    model = parity.keras_model(args, name, args.seed, STEPS)
    model.build()
    init_check = parity.load_init(model, npz_path(args, name))
    model.total_steps.assign(STEPS)  # as MomentumScheduler sets it when fit starts
    if int(keras.ops.convert_to_numpy(model.step)) != 0:
        raise RuntimeError(f"keras_ssl's step is {model.step}, not 0")
    saved = np.load(npz_path(args, name))
    views = [keras.ops.convert_to_tensor(saved[f"view/{i}"]) for i in range(sum(k.startswith("view/") for k in saved))]
    state = {k[len("state/") :]: saved[k] for k in saved if k.startswith("state/")}
    with SYNC.get(name, (None, no_sync))[1](model, state):
        model._update_targets()  # the train step's first move (targets equal online: no change at step 0)
        loss, _ = model.compute_ssl_loss(model.ssl_forward(views, training=True))
    return {"loss": float(keras.ops.convert_to_numpy(loss)), "init_check": init_check}


# --------------------------------------------------------------------------- driver


def side(args, which):
    """One side in a fresh process (as parity.py runs them): its JSON result, or an error string."""
    argv = [sys.executable, os.path.abspath(__file__), "--side", which]
    for key in ("width", "batch_size", "init", "torch_bn", "options", "seed", "threads", "workdir"):
        if getattr(args, key) is not None:
            argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        print(f"{which}: failed\n{proc.stderr[-3000:]}", file=sys.stderr, flush=True)
        return proc.stderr.strip().splitlines()[-1][:80] if proc.stderr.strip() else f"exit {proc.returncode}"
    return json.loads(lines[-1])


def main():
    args = parse()
    sys.path.insert(0, HERE)
    import parity

    if args.side:
        if not args.workdir:
            raise SystemExit("--side needs the --workdir its reference side wrote to")
        kind, *rest = args.side.split(":")
        result = run_torch(args, *rest) if kind == "torch" else run_keras(args, *rest)
        print(json.dumps(result))
        return
    methods = args.methods.split(",") if args.methods else list(parity.KERAS_CLASSES)
    unknown = set(methods) - set(parity.KERAS_CLASSES)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; known: {', '.join(parity.KERAS_CLASSES)}")
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="parity_step0_")
    os.makedirs(args.workdir, exist_ok=True)
    start, failed = time.perf_counter(), False
    rows = [
        "| method | backend | reference loss | keras_ssl loss | rel. diff | init check | result |",
        "|---" * 7 + "|",
    ]
    for name in methods:
        ref = side(args, f"torch:{name}")
        for backend in args.backends.split(","):
            k = side(args, f"keras:{backend}:{name}") if isinstance(ref, dict) else ref
            if isinstance(k, dict):
                rel = abs(k["loss"] - ref["loss"]) / abs(ref["loss"])
                result = "PASS" if abs(k["loss"] - ref["loss"]) <= args.atol + args.rtol * abs(ref["loss"]) else "FAIL"
                if name in NOT_COMPARABLE:
                    result = f"not comparable: {NOT_COMPARABLE[name]}"
                cells = f"{ref['loss']:.7f} | {k['loss']:.7f} | {rel:.1e} | {k['init_check']:.1e} | {result}"
            else:
                result, cells = "FAIL", f"- | - | - | - | FAIL: {k}"
            failed |= result == "FAIL"
            rows.append(f"| {name} | {backend} | {cells} |")
            print(rows[-1], flush=True)
    print(
        f"\nbatch {args.batch_size} (W-MSE: a multiple of w_size), ResNet-18 x{args.width}, init {args.init}, "
        f"reference BN {args.torch_bn}, rtol {args.rtol}, atol {args.atol}; {time.perf_counter() - start:.0f} s\n"
    )
    print("\n".join(rows))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
