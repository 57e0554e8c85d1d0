"""First-steps loss parity: keras_ssl's methods vs parity.py's PyTorch references, on the same weights, views and state.

    python benchmarks/parity_step0.py --methods simclr --backends torch
    python benchmarks/parity_step0.py                                  # every method, torch and tensorflow
    python benchmarks/parity_step0.py --methods byol,moco2 --backends jax --rtol 1e-5
    python benchmarks/parity_step0.py --steps 3 --batch-size 32  # and the next two steps (SGD 1e-4)
    python benchmarks/parity_step0.py --methods nnclr --torch-bn joint  # the reference's BatchNorm as keras_ssl's
    python benchmarks/parity_step0.py --side torch:byol --workdir /tmp/p0  # one side, as the driver runs it
    python benchmarks/parity_step0.py --gradients --batch-size 32  # step 0's gradients against float64

For each method a fresh process builds the reference as parity.run_torch does
(torch_methods.build with parity's method_options, `--init`, `--width`, `--torch-bn`) and trains it
for `--steps` steps (default 1) of SGD (`--lr`, momentum 0.9, coupled decay `--weight-decay`, as
parity.py's `--decay paper`) on consecutive batches of the first CIFAR-10 training images, as
parity.run_torch steps. It records each step's views and the random state that keras_ssl would draw
differently (`SYNC`), and each step's loss. Its initial weights (keras_weights), views and state go to
`--workdir`. Then a fresh process per Keras backend builds keras_ssl's model as parity.run_keras
does, loads the weights with parity.load_init (targets := online; `init check`: the encoders' max
abs difference on 8 images), replays the state and runs `fit` with parity.run_keras's optimizer:
the engine's own train step (targets, forward, loss, update, queues), eagerly, its view maker
replaced by the reference's views of each step. `after check`: the two encoders' eval-mode outputs
on the 8 images after the last step (weights and BatchNorm statistics), max abs difference over the
reference's max abs.

Step 0 passes when |keras_ssl - reference| <= `--atol` + `--rtol` |reference| (as numpy.allclose: the
SimSiam family's losses start near 0.005, where float32's last digits are a large share of the
value). Each later step adds the float noise the updates amplify: a second reference, from initial
weights scaled by 1 + `--perturb` N(0, 1), gives it, times `--noise-factor` (`verdict`). At SGD 0.05 and batch 16 a
rounding-size difference grows to 1e-3 in one step (a reference on one thread against two does
so); the default `--lr 1e-4` keeps the noise small while queues, support sets, centres and running statistics
still carry every step's outputs to the next, which is what the later steps check. `--align` gives
the reference keras_ssl's documented choices where they change the gradient (`KNOWN_CHOICES`).

`--gradients` checks what the step-0 loss cannot: the gradient. The reference also runs a float64
copy of itself on the same views and state (GradientRecord), and each side's step-0 gradient is
compared with that copy's: ||g - g64|| / ||g64|| over all the weights the reference hands over. A
side passes when it is within `--noise-factor` times the float32 reference's own distance. That
distance is large, 4e-4 to 2.5e-2 at batch 32, and changes with the thread count, though each
convolution's and BatchNorm's float32 gradient is within 1e-5 of float64's: the ResNet at
initialisation, in training mode, amplifies its kernels' rounding (the bare encoder under a random
linear readout already lies 5e-3 away). A gradient that differs by a choice (DCLW's detached
weights without `--align`) lies 0.3 away.

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
STEPS = 100  # the nominal run (epoch) length both sides' schedules see; --steps of it run


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
    p.add_argument("--steps", type=int, default=1, help="training steps on both sides (default: step 0's loss only)")
    p.add_argument("--lr", type=float, default=1e-4, help="SGD rate (momentum 0.9), as parity.py's")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="coupled, as parity.py's --decay paper")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--atol", type=float, default=1e-6)
    p.add_argument(
        "--perturb",
        type=float,
        default=1e-6,
        help="with --steps > 1, a second reference whose initial weights are scaled by 1 + perturb * N(0, 1): its "
        "distance from the first is the float noise the steps amplify; each later step's tolerance adds it, "
        "times --noise-factor",
    )
    p.add_argument("--noise-factor", type=float, default=3.0, help="later steps' tolerance: this many times the noise")
    p.add_argument("--align", action="store_true", help="the reference takes keras_ssl's KNOWN_CHOICES")
    p.add_argument(
        "--gradients",
        action="store_true",
        help="step 0's gradient on each side against a float64 reference's (GradientRecord), with --steps 1",
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    p.add_argument("--workdir", default=None, help="default: a new temp dir")
    p.add_argument(
        "--side", default=None, help="one side: torch:METHOD, torch-perturbed:METHOD or keras:BACKEND:METHOD"
    )
    args = p.parse_args(argv)
    if args.gradients and args.steps != 1:
        p.error(f"--gradients compares step 0's gradient: run it with --steps 1, not {args.steps}")
    # What parity.keras_optimizer reads: SGD with momentum 0.9 and PyTorch's coupled decay on every variable.
    args.optimizer, args.decay, args.exclude_norm_bias = "sgd", "paper", False
    args.perturbed = False  # the noise-floor reference (--side torch-perturbed:METHOD)
    args.images = args.batch_size * args.steps  # DeepCluster v2's dataset: the images the steps read
    return args


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


@contextlib.contextmanager
def deepcluster_torch(method, state):
    # After the reference's memory pass and first clustering (run_torch): its memory by sample index...
    bank = method.memory.new_zeros((2, len(method.assignments[0]), method.memory.shape[-1]))
    bank[:, method.memory_index] = method.memory
    state["bank"], state["assignments"] = bank.numpy(), method.assignments.numpy().copy()
    for h in range(len(method.ks)):
        state[f"centroids{h}"] = method.prototypes(h).numpy().copy()
    yield


@contextlib.contextmanager
def deepcluster_keras(model, state):
    # ...replayed in keras_ssl's as its epoch-start k-means would leave it (-100, "no cluster", is its -1).
    memory = model.memory
    memory.bank.assign(state["bank"])
    for h, centroids in enumerate(memory.centroids):
        centroids.assign(state[f"centroids{h}"])
    memory.assignments.assign(np.where(state["assignments"] < 0, -1, state["assignments"]).astype("int32"))
    memory.filled.assign(0)
    model.memory_pass = False  # the memory is the reference's, filled by its own pass
    yield


@contextlib.contextmanager
def mae_torch(method, state):
    noises, draw = [], method.draw_noise

    def recorded(*a):  # each step's masking noise (torch.rand): the reference's draws...
        noises.append(draw(*a))
        return noises[-1]

    method.draw_noise = recorded
    try:
        yield
    finally:
        del method.draw_noise
    state["noise"] = np.stack([n.numpy() for n in noises])


@contextlib.contextmanager
def mae_keras(model, state):
    import keras

    from keras_ssl.layers import masking

    noises, original = iter(state["noise"]), masking.random_masking

    def replayed(tokens, mask_ratio, seed=None):  # ...replayed as keras_ssl's uniform draw (argsort keeps the mask)
        with mock.patch.object(keras.random, "uniform", lambda *a, **k: keras.ops.convert_to_tensor(next(noises))):
            return original(tokens, mask_ratio, seed)

    with mock.patch.object(masking, "random_masking", replayed):
        yield


@contextlib.contextmanager
def simmim_torch(method, state):
    masks, draw = [], method.draw_mask

    def recorded(*a):  # each step's masks (the official MaskGenerator's): the reference's draws...
        masks.append(draw(*a))
        return masks[-1]

    method.draw_mask = recorded
    try:
        yield
    finally:
        del method.draw_mask
    state["masks"] = np.stack([m.numpy() for m in masks]).astype("float32")


@contextlib.contextmanager
def simmim_keras(model, state):
    import keras

    masks = iter(state["masks"])  # ...replayed as keras_ssl's RandomSquareMasking's, (B, N)
    replayed = lambda self, images: keras.ops.convert_to_tensor(next(masks).reshape(len(images), -1))
    with mock.patch.object(type(model.masking), "call", replayed):
        yield


@contextlib.contextmanager
def msn_torch(method, state):
    keeps, draw = [], method.draw_keep

    def recorded(*a):  # each step's kept anchor patches (deit.py's one randperm for the batch)...
        keeps.append(draw(*a))
        return keeps[-1]

    method.draw_keep = recorded
    try:
        yield
    finally:
        del method.draw_keep
    state["keep"] = np.stack([k.numpy() for k in keeps]).astype("int32")


@contextlib.contextmanager
def msn_keras(model, state):
    import keras

    from keras_ssl.layers import masking

    keeps, original = iter(state["keep"]), masking.random_masking

    def noise(shape):  # ...as the uniform noise whose argsort keeps them first, in order, for every image
        b, n = shape
        keep = next(keeps)
        order = np.concatenate([keep, np.setdiff1d(np.arange(n), keep)])
        rank = np.empty(n, "float32")
        rank[order] = (np.arange(n) + 0.5) / n
        return keras.ops.convert_to_tensor(np.tile(rank, (b, 1)))

    def replayed(tokens, mask_ratio, seed=None):
        with mock.patch.object(keras.random, "uniform", lambda shape, *a, **k: noise(shape)):
            return original(tokens, mask_ratio, seed)

    with mock.patch.object(masking, "random_masking", replayed):
        yield


@contextlib.contextmanager
def ijepa_torch(method, state):
    draws, draw = [], method.draw_masks

    def recorded(*a):  # each step's context and target blocks (the official MaskCollator's)...
        draws.append(draw(*a))
        return draws[-1]

    method.draw_masks = recorded
    try:
        yield
    finally:
        del method.draw_masks
    for step, (masks_enc, masks_pred) in enumerate(draws):
        state[f"context/{step}"] = masks_enc[0].numpy().astype("int32")  # (B, Kc), one context block
        state[f"targets/{step}"] = np.stack([m.numpy() for m in masks_pred], axis=1).astype("int32")  # (B, M, Kt)


@contextlib.contextmanager
def ijepa_keras(model, state):
    import keras

    steps, n = iter(range(sum(k.startswith("context/") for k in state))), int(np.prod(model.masking.grid_size))

    def replayed(self, images):  # ...replayed as keras_ssl's MultiBlockMasking's index lists, all valid
        step = next(steps)
        context, targets = state[f"context/{step}"], state[f"targets/{step}"]
        context_mask = np.zeros((len(context), n), bool)
        np.put_along_axis(context_mask, context, True, axis=1)
        target_mask = np.zeros(targets.shape[:2] + (n,), bool)
        np.put_along_axis(target_mask, targets, True, axis=2)
        arrays = {
            "context_ids": context,
            "context_valid": np.ones(context.shape, bool),
            "target_ids": targets,
            "target_valid": np.ones(targets.shape, bool),
            "context_mask": context_mask,
            "target_mask": target_mask,
        }
        return {k: keras.ops.convert_to_tensor(v) for k, v in arrays.items()}

    with mock.patch.object(type(model.masking), "call", replayed):
        yield


@contextlib.contextmanager
def ibot_torch(method, state):
    masks, draw = [], method.draw_masks

    def recorded(*a):  # each step's global-crop block masks (iBOT's loader's, DINOv2's collate's)...
        masks.append(draw(*a))
        return masks[-1]

    method.draw_masks = recorded
    try:
        yield
    finally:
        del method.draw_masks
    state["masks"] = np.stack([m.numpy() for m in masks]).astype("float32")


@contextlib.contextmanager
def ibot_keras(model, state):
    import keras

    masks = iter(state["masks"])  # ...replayed as keras_ssl's BlockMasking's, (2 B, N) crop-major
    replayed = lambda self, images: keras.ops.convert_to_tensor(next(masks))
    with mock.patch.object(type(model.masking), "call", replayed):
        yield


@contextlib.contextmanager
def dinov2_torch(method, state):
    import torch
    import torch_vit_ibot

    nearest, koleo = [], torch_vit_ibot.koleo

    def recorded(x, eps=1e-8):  # ...and each KoLeo's nearest neighbours (koleo_loss.py's max of the dots):
        # at DINOv2's init (class token 1e-6, LayerScale 1e-5) the class tokens agree to 3e-5, their dots
        # tie at 1 in float32, and the choice among the ties is the library's rounding
        with torch.no_grad():
            unit = torch.nn.functional.normalize(x, eps=eps, p=2, dim=-1)
            dots = unit @ unit.t()
            dots.view(-1)[:: unit.shape[0] + 1].fill_(-1)
            nearest.append(torch.max(dots, dim=1)[1].numpy().astype("int32"))
        return koleo(x, eps)

    with ibot_torch(method, state), mock.patch.object(torch_vit_ibot, "koleo", recorded):
        yield
    state["nearest"] = np.stack(nearest)  # (steps x 2 crops, B)


@contextlib.contextmanager
def dinov2_keras(model, state):
    import keras

    from keras_ssl import losses
    from keras_ssl.losses import distillation

    nearest, koleo = iter(state["nearest"]), losses.koleo

    def replayed(features, eps=1e-8):
        with mock.patch.object(distillation.ops, "argmax", lambda *a, **k: keras.ops.convert_to_tensor(next(nearest))):
            return koleo(features, eps)

    with ibot_keras(model, state), mock.patch.object(losses, "koleo", replayed):
        yield


SYNC = {
    "deepclusterv2": (deepcluster_torch, deepcluster_keras),
    "ijepa": (ijepa_torch, ijepa_keras),
    "ibot": (ibot_torch, ibot_keras),
    "dinov2": (dinov2_torch, dinov2_keras),
    "msn": (msn_torch, msn_keras),
    "simmim": (simmim_torch, simmim_keras),
    "mae": (mae_torch, mae_keras),
    "moco2": (moco2_torch, moco2_keras),
    "nnclr": (nnclr_torch, nnclr_keras),
    "nnbyol": (nnclr_torch, nnclr_keras),  # the same support set of random unit rows
    "nnsiam": (nnclr_torch, nnclr_keras),
    "ressl": (ressl_torch, ressl_keras),
    "tico": (tico_torch, tico_keras),
    "wmse": (wmse_torch, wmse_keras),
}
# keras_ssl's documented departures from a reference's source (docs/benchmarks.md) that change its
# gradient (most show from step 1 on) or its loss: method -> (reference attribute, keras_ssl's value).
# `--align` gives the reference keras_ssl's choice, to compare the rest of the step.
KNOWN_CHOICES = {
    "dclw": ("detach_weights", True),  # the von Mises weights without gradient, as lightly's; dcl.py keeps it
    # The target's EMA momentum: a cosine to momentum_end over the run; msn_train.py's rises linearly to 1
    # over 1.25 x the run. Not the gradient but the targets from step 1 on (3e-5 apart at step 1 of 100).
    "msn": ("momentum_schedule", "cosine"),
    # Local crops' position table resized to their grid (DINOv2's interpolate_offset 0); the official
    # codes' scale factor (g + 0.1) / g moves the bicubic samples, and the local crops' [CLS] loss from step 0.
    "ibot": ("offset", 0.0),
    "dinov2": ("offset", 0.0),
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
    if args.align and name in KNOWN_CHOICES:
        setattr(method, *KNOWN_CHOICES[name])
    path = os.path.join(os.environ.get("KERAS_SSL_DATA_DIR", "/work/shared/data"), "cifar10.npz")
    batch = batch_size(args, name, options)
    data = np.load(path)
    x, y = data["x_train"][: batch * args.steps], data["y_train"][: batch * args.steps].astype("int64")
    check_h = parity.torch_features(method, x[:8])  # as parity.run_torch: before any training forward
    # Copies: keras_weights' arrays share the parameters' memory, which the steps below change.
    weights = {k: np.array(v, copy=True) for k, v in method.keras_weights().items()}
    # parity.run_torch's optimizer under --decay paper: torch.optim.SGD, its decay coupled, on every parameter.
    opt = torch.optim.SGD(method.trainable(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    if args.perturbed:  # the noise-floor run: the same, from weights a float rounding or so away
        parity.perturb(method, args.perturb, args.seed)
    gen, state, saved, losses, result = torch_methods.views_generator(args.seed), {}, {}, [], {}
    if hasattr(method, "init_memory"):  # DeepCluster v2: the pass over the data, then the first clustering;
        # its BatchNorm statistics put back, which keras_ssl's side does not make, so the after check sees the steps
        stats = {k: v.clone() for k, v in method.state_dict().items() if "running_" in k or "num_batches" in k}
        method.init_memory(parity.memory_batches(x, np.arange(len(x)), batch, args.steps), gen)
        method.load_state_dict(stats, strict=False)
        method.begin_epoch(0)
    with SYNC.get(name, (no_sync,))[0](method, state):
        for step in range(args.steps):
            grads = GradientRecord(method) if args.gradients and not args.perturbed else None  # step 0 only
            rows = slice(step * batch, (step + 1) * batch)
            loss, views = parity.torch_step(
                method,
                opt,
                parity.torch_images(x[rows]),
                gen,
                step,
                grads,
                labels=y[rows],
                indices=np.arange(len(x))[rows],
            )
            losses.append(float(loss.detach()))
            saved.update({f"view/{step}/{i}": v.permute(0, 2, 3, 1).contiguous().numpy() for i, v in enumerate(views)})
            if grads is not None:
                saved.update(grads.arrays)
                result["grad_error"] = gradient_error(grads.arrays, "grad32/")
    after_h = parity.torch_features(method, x[:8])  # eval mode: the weights and BatchNorm statistics it ends with
    if args.perturbed:
        return {"loss": losses[0], "losses": losses, "batch": batch, "after_h": after_h.tolist()}
    state = {f"state/{k}": v for k, v in state.items()}
    np.savez(
        npz_path(args, name), check_x=x[:8], check_h=check_h, after_h=after_h, labels=y, **weights, **saved, **state
    )
    return {"loss": losses[0], "losses": losses, "batch": batch, **result}


class GradientRecord:
    """parity.torch_step's `before_update` for `--gradients`: step 0's gradient, and a float64 twin's.

    Made before the step, it copies the method (weights, queues, centres: the state the step starts
    from) to float64. Called with the step's views once the float32 gradient is in, it records that
    gradient (`grad32/<key>`, keras_weights' layout), then runs the copy's step on the same views
    (cast) with torch's global generator rewound to where the float32 loss drew from (W-MSE's
    sub-batch rows), new tensors in float64, inside the same SYNC hook (MoCo's interleave), and
    records its gradient (`grad64/<key>`). The float32 reference's and keras_ssl's gradients are then
    each compared with the float64 one (`gradient_error`).
    """

    def __init__(self, method):
        import copy

        import torch

        self.method, self.twin, self.rng = method, copy.deepcopy(method).double(), torch.get_rng_state()

    def __call__(self, views):
        import torch

        self.arrays = {f"grad32/{k}": np.array(v, copy=True) for k, v in self.method.keras_weights(grad=True).items()}
        default, after = torch.get_default_dtype(), torch.get_rng_state()
        torch.set_rng_state(self.rng)
        torch.set_default_dtype(torch.float64)
        for attr in ("labels", "indices"):  # the step's per-sample inputs, set after the copy was made
            if hasattr(self.method, attr):
                setattr(self.twin, attr, getattr(self.method, attr))
        try:
            self.twin.before_step(0)
            self.twin.loss([v.double() for v in views], 0).backward()
            self.twin.drop_frozen_grads(0)
        finally:
            torch.set_default_dtype(default)
            torch.set_rng_state(after)
        self.arrays.update({f"grad64/{k}": np.array(v) for k, v in self.twin.keras_weights(grad=True).items()})


def gradient_error(arrays, prefix):
    """(relative norm, median relative) difference of the `prefix` gradient from the `grad64/` one.

    ||g - g64|| / ||g64|| over all the weights together, and the median of |g - g64| / |g64| over the
    entries where g64 is not 0 (frozen layers' gradients are 0 on every side).
    """
    keys = sorted(k[len("grad64/") :] for k in arrays if k.startswith("grad64/"))
    missing = [k for k in keys if f"{prefix}{k}" not in arrays]
    if missing:
        raise ValueError(f"no {prefix} gradient for {missing[:5]}")
    g = np.concatenate([np.ravel(arrays[f"{prefix}{k}"]).astype(np.float64) for k in keys])
    g64 = np.concatenate([np.ravel(arrays[f"grad64/{k}"]) for k in keys])
    nonzero = g64 != 0
    return [
        float(np.linalg.norm(g - g64) / np.linalg.norm(g64)),
        float(np.median(np.abs(g - g64)[nonzero] / np.abs(g64[nonzero]))),
    ]


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

    import keras_ssl

    keras.utils.set_random_seed(args.seed)
    model = parity.keras_model(args, name, args.seed, STEPS)
    # Eagerly, so that each step can take its views from Python; parity.run_keras's optimizer.
    model.compile(optimizer=parity.keras_optimizer(args), run_eagerly=True)
    applied = record_gradients(model.optimizer) if args.gradients else None  # over compile's own wrapping
    model.build()
    init_check = parity.load_init(model, npz_path(args, name))
    if int(keras.ops.convert_to_numpy(model.step)) != 0:
        raise RuntimeError(f"keras_ssl's step is {model.step}, not 0")
    saved = np.load(npz_path(args, name))
    views = [
        [saved[f"view/{s}/{i}"] for i in range(sum(k.startswith(f"view/{s}/") for k in saved))]
        for s in range(args.steps)
    ]
    replay = iter(views)
    # The engine's own train step, but for its view maker: it returns the reference's views of the step.
    object.__setattr__(
        model, "views", lambda images, training=True: [keras.ops.convert_to_tensor(v) for v in next(replay)]
    )
    state = {k[len("state/") :]: saved[k] for k in saved if k.startswith("state/")}
    means = []

    class Losses(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            means.append(float(keras.ops.convert_to_numpy(logs["loss"])))  # Keras logs the epoch's running mean

    batch = len(views[0][0])
    with SYNC.get(name, (None, no_sync))[1](model, state):
        model.fit(
            np.zeros((batch * args.steps, 32, 32, 3), "uint8"),  # stand-ins: the step replaces their views
            saved["labels"] if model.needs_labels else None,
            batch_size=batch,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[keras_ssl.callbacks.MomentumScheduler(total_steps=STEPS), Losses()],
        )
    losses = [parity.step_loss(means[: i + 1]) for i in range(len(means))]
    h = model.encoder(keras.ops.convert_to_tensor(saved["check_x"].astype("float32") / 255.0), training=False)
    after = np.max(np.abs(keras.ops.convert_to_numpy(h) - saved["after_h"])) / np.max(np.abs(saved["after_h"]))
    result = {"loss": losses[0], "losses": losses, "init_check": init_check, "after_check": float(after)}
    if applied:
        ours = {f"grad/{key}": g for key, g in keras_layout(model, saved, applied[0]).items()}
        result["grad_error"] = gradient_error({**ours, **saved}, "grad/")
    return result


def record_gradients(optimizer):
    """Makes `optimizer.apply` keep each call's gradients as numpy, by variable id: the list it returns.

    Every backend's train step ends in `apply`: TensorFlow's and PyTorch's with the variables, JAX's
    `stateless_apply` with the optimizer's own (eager here, so the gradients are concrete).
    """
    import types

    import keras

    calls, apply = [], optimizer.apply

    def recording(self, grads, trainable_variables=None):
        variables = trainable_variables if trainable_variables is not None else self._trainable_variables
        calls.append({id(v): keras.ops.convert_to_numpy(g) for v, g in zip(variables, grads) if g is not None})
        return apply(grads, trainable_variables)

    optimizer.apply = types.MethodType(recording, optimizer)
    return calls


def keras_layout(model, saved, grads):
    """`grads` (by variable id) in the reference's keras_weights layout: the keys load_init assigns."""
    out = {}
    for layer in model.encoder.layers:
        for w in layer.trainable_weights:
            out[f"enc/{layer.name}/{w.name}"] = w
    for attr in sorted({k.split("/")[1] for k in saved if k.startswith("head/")}):
        out.update({f"head/{attr}/{i}": w for i, w in enumerate(getattr(model, attr).trainable_weights)})
    missing = [key for key, w in out.items() if id(w) not in grads]
    if missing:  # frozen layers get zeros from the engine, so a gap here is a mapping error
        raise KeyError(f"no gradient reached the optimizer for {missing[:5]}")
    return {key: grads[id(w)] for key, w in out.items()}


# --------------------------------------------------------------------------- driver


def after_noise(args, name, noisy):
    """' (noise)': the perturbed reference's end features' distance from the reference's, as `after_check`."""
    if not noisy:
        return ""
    after = np.load(npz_path(args, name))["after_h"]
    return f" ({np.max(np.abs(np.array(noisy['after_h']) - after)) / np.max(np.abs(after)):.0e})"


def verdict(reference, ours, perturbed=None, rtol=1e-4, atol=1e-6, noise_factor=3.0):
    """(pass, worst step, noise): each step's loss within atol + rtol |reference| + noise_factor x that step's noise.

    The noise is |perturbed - reference|, a reference run from weights perturbed by float rounding: the
    steps after the first amplify such differences (batch statistics, normalisations), as they amplify
    the two libraries' different summation orders. One perturbed run is one draw of that noise, and
    an SVD or a chaotic loss (Barlow Twins at batch 32) can land keras_ssl twice as far, hence the
    factor. Step 0 runs before any update and gets no noise.
    """
    reference, ours = np.asarray(reference, float), np.asarray(ours, float)
    noise = np.zeros_like(reference) if perturbed is None else np.abs(np.asarray(perturbed, float) - reference)
    noise[0] = 0.0
    if ours.shape != reference.shape:
        return False, 0, noise
    excess = np.abs(ours - reference) - (atol + rtol * np.abs(reference) + noise_factor * noise)
    return bool(np.all(excess <= 0)), int(np.argmax(excess)), noise


def gradient_verdict(reference, ours, factor=3.0, floor=1e-6):
    """(pass, cell): keras_ssl's gradient is within `factor` x the float32 reference's distance of the float64 one.

    Both arguments are gradient_error's [relative norm, median relative]; the norm decides. The float32
    reference's distance from the float64 gradient is how far float32 arithmetic gets for this method,
    batch and thread count: a side within a few times that distance is as exact as the reference.
    """
    ok = ours[0] <= factor * reference[0] + floor
    return ok, f"{ours[0]:.1e} / {reference[0]:.1e} ({ours[1]:.0e} / {reference[1]:.0e})"


def side(args, which):
    """One side in a fresh process (as parity.py runs them): its JSON result, or an error string."""
    argv = [sys.executable, os.path.abspath(__file__), "--side", which]
    for key in (
        "width",
        "batch_size",
        "init",
        "torch_bn",
        "options",
        "seed",
        "steps",
        "lr",
        "weight_decay",
        "perturb",
        "threads",
        "workdir",
    ):
        if getattr(args, key) is not None:
            argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    argv += ["--align"] if args.align else []
    argv += ["--gradients"] if args.gradients else []
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
        args.perturbed = kind == "torch-perturbed"
        result = run_torch(args, *rest) if kind.startswith("torch") else run_keras(args, *rest)
        print(json.dumps(result))
        return
    methods = args.methods.split(",") if args.methods else list(parity.KERAS_CLASSES)
    unknown = set(methods) - set(parity.KERAS_CLASSES)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; known: {', '.join(parity.KERAS_CLASSES)}")
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="parity_step0_")
    os.makedirs(args.workdir, exist_ok=True)
    start, failed = time.perf_counter(), False
    grad_column = " gradient vs float64: keras_ssl / float32 reference (median) |" if args.gradients else ""
    rows = [
        "| method | backend | reference loss | keras_ssl loss | rel. diff | worst step: rel. diff (noise) | init check"
        f" | after check (noise) |{grad_column} result |",
        "|---" * (10 if args.gradients else 9) + "|",
    ]
    for name in methods:
        ref = side(args, f"torch:{name}")
        noisy = side(args, f"torch-perturbed:{name}") if args.steps > 1 and isinstance(ref, dict) else None
        for backend in args.backends.split(","):
            k = side(args, f"keras:{backend}:{name}") if isinstance(ref, dict) else ref
            if isinstance(k, dict) and (noisy is None or isinstance(noisy, dict)):
                r, o = np.array(ref["losses"]), np.array(k["losses"])
                ok, worst, noise = verdict(r, o, noisy and noisy["losses"], args.rtol, args.atol, args.noise_factor)
                rel = np.abs(o - r) / np.abs(r)
                if args.gradients:  # as near the float64 gradient as the float32 reference, or nearer
                    grad_ok, grad_cell = gradient_verdict(ref["grad_error"], k["grad_error"], args.noise_factor)
                    ok &= grad_ok
                result = "PASS" if ok else "FAIL"
                if name in NOT_COMPARABLE:
                    result = f"not comparable: {NOT_COMPARABLE[name]}"
                cells = (
                    f"{r[0]:.7f} | {o[0]:.7f} | {rel[0]:.1e} | {worst}: {rel[worst]:.1e} ({noise[worst] / abs(r[worst]):.0e})"
                    f" | {k['init_check']:.1e} | {k['after_check']:.1e}{after_noise(args, name, noisy)}"
                    + (f" | {grad_cell}" if args.gradients else "")
                    + f" | {result}"
                )
            else:
                blanks = "- | " * (7 if args.gradients else 6)
                result, cells = "FAIL", f"{blanks}FAIL: {k if isinstance(k, str) else noisy}"
            failed |= result == "FAIL"
            rows.append(f"| {name} | {backend} | {cells} |")
            print(rows[-1], flush=True)
    print(
        f"\nbatch {args.batch_size} (W-MSE: a multiple of w_size), ResNet-18 x{args.width}, init {args.init}, "
        f"reference BN {args.torch_bn}, {args.steps} step(s) of SGD {args.lr} (momentum 0.9, coupled decay "
        f"{args.weight_decay}), rtol {args.rtol}, atol {args.atol}"
        + (", step 0's gradient against a float64 reference's" if args.gradients else "")
        + f"; {time.perf_counter() - start:.0f} s\n"
    )
    print("\n".join(rows))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
