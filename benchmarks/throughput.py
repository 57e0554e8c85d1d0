"""SimCLR training-step throughput: keras_ssl on each backend vs plain PyTorch.

    python benchmarks/throughput.py                       # everything, one process per run
    python benchmarks/throughput.py --width 0.25 --steps 5
    python benchmarks/throughput.py --widths 0.25,1.0    # the README table: both widths
    python benchmarks/throughput.py --run jax:compiled    # a single measurement
    python benchmarks/throughput.py --methods all         # img/s of every method, each backend
    python benchmarks/throughput.py --precision bfloat16  # mixed_bfloat16 vs torch.autocast

Each run trains SimCLR (CIFAR ResNet-18, two views of every image, per-sample
resized crop + flip + colour jitter + grayscale, NT-Xent) on random uint8
images, and reports images/s (source images; each is seen twice) after
warm-up steps. The PyTorch reference is written the way a PyTorch user would:
`nn.Module`s, batched augmentations on tensors (`affine_grid`/`grid_sample`
crops, vectorised colour ops), `torch.optim.Adam`, eager, NCHW; the
`torch-reference:channels_last` row is the same code with the model and views
in `channels_last` memory, the tuned variant. Runs go one after
the other in fresh processes, so their ratio is meaningful. The last column
is the fraction of the machine's measured matmul peak (in the run's precision,
the best of PyTorch, TensorFlow and JAX; training FLOPs per image = 3 x forward
FLOPs x 2 views, counted from the model's convolution and dense layers).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=float, default=1.0, help="ResNet-18 width multiplier")
    p.add_argument("--widths", default=None, help="comma list: one table per width (overrides --width)")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    p.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16: keras_ssl under mixed_bfloat16, the reference under torch.autocast",
    )
    p.add_argument(
        "--methods",
        default=None,
        help="per-method table instead: comma list or 'all', on quality.py's CPU budget models",
    )
    p.add_argument("--backends", default="tensorflow,jax,torch", help="backends of the --methods table")
    p.add_argument("--run", default=None, help="one measurement: torch-reference or BACKEND:compiled|eager")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="rounds over the runs; each run reports its best round (other load only slows a run)",
    )
    p.add_argument(
        "--runs",
        default="torch-reference,torch-reference:channels_last,jax:compiled,"
        "tensorflow:compiled,torch:eager,jax:eager,tensorflow:eager,torch:compiled",
    )
    return p.parse_args()


# ---------------------------------------------------------------- keras_ssl
def forward_flops(model):
    """Multiply-adds x 2 of the Conv2D and Dense layers of a functional model."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            shape = layer.output.shape
            (h, w), c_out = (shape[2:], shape[1]) if layer.data_format == "channels_first" else (shape[1:3], shape[3])
            kh, kw, c_in, _ = layer.kernel.shape
            total += 2 * h * w * kh * kw * c_in * c_out
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return total


def start_keras(backend, args):
    """Imports Keras on `backend` with the run's precision and seed; returns the training images."""
    os.environ["KERAS_BACKEND"] = backend
    import keras

    if args.precision == "bfloat16":
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    steps = args.steps + args.warmup
    return np.random.default_rng(0).integers(0, 256, (args.batch_size * steps, 32, 32, 3), dtype="uint8")


def import_quality():
    """benchmarks/quality.py as a module (its METHODS, encoder and optimizer)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import quality

    return quality


def run_keras(backend, mode, args):
    x = start_keras(backend, args)
    import keras

    import keras_ssl

    encoder = keras_ssl.backbones.resnet18((32, 32, 3), stem="cifar", width=args.width)
    model = keras_ssl.SimCLR(encoder, temperature=0.5, seed=0)
    compiled = mode == "compiled"
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        jit_compile=True if compiled and backend != "tensorflow" else False,
        run_eagerly=not compiled,
    )
    flops = 3 * 2 * (forward_flops(encoder) + forward_flops_head(model))
    return time_steps(model, x, args), flops


def time_steps(model, x, args, y=None, epochs=1):
    """Median seconds of a `fit` step after `args.warmup` steps of the last epoch (the loss is read each step)."""
    import keras

    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            times.clear()

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(keras.ops.convert_to_numpy(logs["loss"]))
            times.append(time.perf_counter() - self.start)

    model.fit(x, y, batch_size=args.batch_size, epochs=epochs, verbose=0, shuffle=False, callbacks=[Timer()])
    return np.median(times[args.warmup :])


def run_method(backend, name, args):
    """One method of quality.py's CPU budget (same models and options), its default compiled step."""
    x = start_keras(backend, args)
    quality = import_quality()
    budget = argparse.Namespace(full=False, paper_optimizer=False, width=16, seed=0, batch_size=args.batch_size)
    cls, options, _ = quality.METHODS[name]
    if "num_samples" in cls.hyperparameters():
        options = dict(options, num_samples=len(x))
    model = cls(quality.encoder(name, budget), seed=0, **options)
    model.compile(optimizer=quality.optimizer(name, 1, budget))
    # SupCon trains on labels; DeepCluster v2's first epoch only fills its memory, so its second is timed.
    y = np.arange(len(x)) % 10 if model.needs_labels else None
    return time_steps(model, x, args, y=y, epochs=2 if "num_samples" in cls.hyperparameters() else 1)


def forward_flops_head(model):
    total, dim = 0, model.feature_dim
    for layer in model.projector.blocks:
        if hasattr(layer, "units"):
            total += 2 * dim * layer.units
            dim = layer.units
    return total


# ------------------------------------------------------- plain PyTorch
def run_torch_reference(args, channels_last=False):
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.short = nn.Sequential()
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            return F.relu(self.b2(self.c2(y)) + self.short(x))

    base = max(8, int(round(64 * args.width)))
    layers, cin = [nn.Conv2d(3, base, 3, 1, 1, bias=False), nn.BatchNorm2d(base), nn.ReLU()], base
    for stage in range(4):
        for i in range(2):
            cout = base * 2**stage
            layers.append(Block(cin, cout, 2 if stage > 0 and i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    encoder = nn.Sequential(*layers)
    projector = nn.Sequential(nn.Linear(cin, cin, bias=False), nn.BatchNorm1d(cin), nn.ReLU(), nn.Linear(cin, 128))
    if channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    params = list(encoder.parameters()) + list(projector.parameters())
    opt = torch.optim.Adam(params, 1e-3)

    def augment(x):
        b = x.shape[0]
        area = torch.empty(b).uniform_(0.08, 1.0)
        ratio = torch.exp(torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3)))
        w = torch.sqrt(area * ratio).clamp(max=1.0)
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (torch.rand(b) * (1 - w) + w / 2) * 2 - 1
        cy = (torch.rand(b) * (1 - h) + h / 2) * 2 - 1
        flip = torch.where(torch.rand(b) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
        grid = F.affine_grid(theta, (b, 3, 32, 32), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        # colour jitter (p=0.8): brightness, contrast, saturation 0.4, hue 0.1, in a random order per
        # image as torchvision's ColorJitter (fn_idx = randperm(4)); the HSV round trip runs once
        apply = (torch.rand(b, 1, 1, 1) < 0.8).float()
        draws = torch.rand(b, 4)
        order = draws[:, :3].argsort(1)
        factors = torch.empty(b, 3).uniform_(0.6, 1.4).gather(1, order)
        hue_position = (draws[:, :3] < draws[:, 3:]).sum(1).view(b, 1, 1, 1)
        j = x
        for before_hue in (True, False):
            if not before_hue:
                j = hue_shift(j, torch.empty(b, 1, 1).uniform_(-0.1, 0.1))
            for step in range(3):
                active = step < hue_position if before_hue else step >= hue_position
                kind, f = order[:, step].view(b, 1, 1, 1), factors[:, step].view(b, 1, 1, 1)
                j = torch.where(active, blend(j, kind, f), j)
        x = apply * j + (1 - apply) * x
        to_gray = (torch.rand(b, 1, 1, 1) < 0.2).float()
        gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).expand_as(x)
        return to_gray * gray + (1 - to_gray) * x

    def blend(x, kind, f):  # kind 0 brightness (towards black), 1 contrast (mean grey), 2 saturation (grey)
        gray = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]
        target = torch.where(kind == 0, 0.0, torch.where(kind == 1, gray.mean((2, 3), keepdim=True), gray))
        return (target + f * (x - target)).clamp(0, 1)

    def hue_shift(x, shift):
        r, g, b_ = x[:, 0], x[:, 1], x[:, 2]
        maxc, minc = x.max(1).values, x.min(1).values
        v, delta = maxc, maxc - minc
        s = torch.where(maxc > 0, delta / maxc.clamp(min=1e-8), torch.zeros_like(maxc))
        d = delta.clamp(min=1e-8)
        h = torch.where(maxc == r, (g - b_) / d, torch.where(maxc == g, 2 + (b_ - r) / d, 4 + (r - g) / d))
        h = torch.where(delta > 0, (h / 6) % 1.0, torch.zeros_like(h))
        h = (h + shift) % 1.0
        i = torch.floor(h * 6)
        f = h * 6 - i
        p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
        i = i.long() % 6
        choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
        out = [sum(torch.where(i == k, c[ch], torch.zeros_like(v)) for k, c in enumerate(choices)) for ch in range(3)]
        return torch.stack(out, 1)

    def nt_xent(z1, z2, t=0.5):
        z = F.normalize(torch.cat([z1, z2]), dim=1)
        logits = z @ z.T / t
        n = z.shape[0]
        logits = logits.masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
        target = (torch.arange(n) + n // 2) % n
        return F.cross_entropy(logits, target)

    x_all = torch.randint(0, 256, (args.batch_size, 3, 32, 32), dtype=torch.uint8)
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        x = x_all.float() / 255.0
        views = torch.cat([augment(x), augment(x)])
        if channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bfloat16"):
            z1, z2 = projector(encoder(views)).float().chunk(2)
        loss = nt_xent(z1, z2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()
        times.append(time.perf_counter() - start)
    return np.median(times[args.warmup :])


def matmul_peak(precision, n=2048, reps=5):
    """Best 2048^2 matmul FLOP/s over PyTorch, TensorFlow and JAX: (flops, library).

    The libraries' BLAS differ a lot by CPU (MKL, which PyTorch uses, is slow on AMD),
    so one library's figure can understate the machine's peak.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    def torch_mm():
        import torch

        a = torch.randn(n, n, dtype=getattr(torch, precision))
        return lambda: a @ a

    def tf_mm():
        import tensorflow as tf

        a = tf.cast(tf.random.normal((n, n)), precision)
        f = tf.function(lambda: a @ a)
        return lambda: f().numpy()

    def jax_mm():
        import jax

        a = jax.numpy.ones((n, n), precision)
        f = jax.jit(lambda a: a @ a)
        return lambda: f(a).block_until_ready()

    best = (0.0, "none")
    for name, make in (("torch", torch_mm), ("tensorflow", tf_mm), ("jax", jax_mm)):
        try:
            mm = make()
        except ImportError:
            continue
        for _ in range(2):
            mm()
        for _ in range(3):  # best of three: other load on the machine only slows a trial
            start = time.perf_counter()
            for _ in range(reps):
                mm()
            best = max(best, (reps * 2 * n**3 / (time.perf_counter() - start), name))
    return best


def measure(run, args):
    """One run in a fresh process: {"seconds", "flops"}, or None if it failed."""
    cmd = [
        sys.executable,
        __file__,
        "--run",
        run,
        "--batch-size",
        str(args.batch_size),
        "--width",
        str(args.width),
        "--precision",
        args.precision,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        print(f"{run}: failed\n{proc.stderr[-2000:]}")
        return None
    return json.loads(lines[-1])


def main():
    args = parse()
    if args.run:
        if args.run.startswith("torch-reference"):
            seconds, flops = run_torch_reference(args, channels_last=args.run.endswith("channels_last")), None
        elif args.run.startswith("method:"):
            _, backend, name = args.run.split(":")
            seconds, flops = run_method(backend, name, args), None
        else:
            backend, mode = args.run.split(":")
            seconds, flops = run_keras(backend, mode, args)
        print(json.dumps({"run": args.run, "seconds": float(seconds), "flops": flops}))
        return
    if args.methods:
        return method_table(args)
    peak, peak_library = matmul_peak(args.precision)
    for width in args.widths.split(",") if args.widths else [args.width]:
        args.width = float(width)
        table(args, peak, peak_library)


def table(args, peak, peak_library):
    """Round-robin rounds of every run at `args.width`, printed with ratios and % of peak."""
    runs = args.runs.split(",")
    # Round-robin, so slow spells on a shared machine hit every run alike.
    rounds = [{run: measure(run, args) for run in runs} for _ in range(args.repeats)]
    seconds = {run: [r[run]["seconds"] for r in rounds if r[run]] for run in runs}
    seconds = {run: s for run, s in seconds.items() if s}
    flops = next((r[run]["flops"] for r in rounds for run in seconds if r[run] and r[run]["flops"]), None)
    ref = min(seconds["torch-reference"]) if "torch-reference" in seconds else None
    print(
        f"\nSimCLR step, CIFAR ResNet-18 width {args.width}, batch {args.batch_size} (x2 views), "
        f"{args.precision}, {os.cpu_count()} CPUs, {args.precision} matmul peak {peak / 1e9:.0f} GFLOP/s "
        f"({peak_library}); best of {args.repeats} rounds, spread = slowest / best - 1"
    )
    print(f"{'run':30s} {'s/step':>8s} {'img/s':>8s} {'vs torch':>9s} {'% peak':>7s} {'spread':>7s}")
    for run, times in seconds.items():
        best = min(times)
        ips = args.batch_size / best
        ratio = f"{ref / best:.2f}x" if ref else "-"
        frac = f"{100 * flops * ips / peak:.1f}" if flops else "-"
        print(f"{run:30s} {best:8.3f} {ips:8.1f} {ratio:>9s} {frac:>7s} {100 * (max(times) / best - 1):6.0f}%")


def method_table(args):
    METHODS = import_quality().METHODS
    names = list(METHODS) if args.methods == "all" else args.methods.split(",")
    backends = args.backends.split(",")
    rounds = [{(b, n): measure(f"method:{b}:{n}", args) for b in backends for n in names} for _ in range(args.repeats)]
    table = {
        key: min((r[key] for r in rounds if r[key]), key=lambda r: r["seconds"], default=None) for key in rounds[0]
    }
    print(
        f"\nimages/s per method (quality.py's CPU budget: tiny_encoder x16, MAE ViT 2x64; batch "
        f"{args.batch_size}, each image in all its views; compiled step; {args.precision}; "
        f"best of {args.repeats} rounds), {os.cpu_count()} CPUs"
    )
    print(f"{'method':>13s} " + " ".join(f"{b:>10s}" for b in backends))
    for n in names:
        cells = [
            f"{args.batch_size / table[b, n]['seconds']:10.0f}" if table[b, n] else f"{'failed':>10s}" for b in backends
        ]
        print(f"{n:>13s} " + " ".join(cells))


if __name__ == "__main__":
    main()
