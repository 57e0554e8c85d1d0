"""Learning parity (issue 34): keras_ssl vs an independent PyTorch implementation, step for step.

    # the issue's budget (long: see the time estimates in docs/benchmarks.md)
    python benchmarks/parity.py --methods byol,dino --backends jax,tensorflow,torch --seeds 0,1
    # DINO with its own recipe on both sides (warm-up, cosine, decay 1e-4, clipping)
    python benchmarks/parity.py --methods dino --recipe paper --backends tensorflow --seeds 0
    # a tiny check (a minute or two per run on 2 CPU cores)
    python benchmarks/parity.py --methods simclr --images 1024 --epochs 1 --width 0.125 \
        --batch-size 128 --test-images 1000 --seeds 0
    # one run, as the harness starts it (prints one JSON line)
    python benchmarks/parity.py --run torch:byol:0 --images 1024 --epochs 1

For each method and seed, a fresh process trains the plain-PyTorch reference
(benchmarks/torch_methods.py and torch_methods_catalogue.py, written from the
papers' official code), then a fresh process per backend trains keras_ssl with
the same settings (benchmarks/parity_step0.py checks that the two sides' first
losses agree on the same weights and views):

- data: the first `--images` CIFAR-10 training images; epoch `e` visits them in
  `np.random.default_rng([seed, e]).permutation`, batches of `--batch-size`
  (last partial batch dropped) on both sides;
- model: CIFAR ResNet-18 at `--width` (keras_ssl.backbones.resnet18; the
  reference's pads as Keras's "same"), with the method's heads at the sizes of
  keras_ssl's defaults, passed explicitly to both sides (`METHOD_OPTIONS`);
- init: the reference draws the weights (`--init`: Keras's conventions (keras_ssl's former defaults),
  PyTorch's module defaults, or torchvision's ResNet init) and hands the very
  same arrays to keras_ssl, whose targets are then set equal to the online
  networks; the Keras process checks its encoder's output against the
  reference's on 8 images (`init_check`, max abs difference);
- optimizer: SGD (constant `--lr`, momentum 0.9) with `--decay paper`
  (L2 coupled into the gradient before momentum, as `torch.optim.SGD`; on the
  Keras side `keras_ssl.optimizers.SGD`, PyTorch's SGD), `keras` (decoupled
  `w -= lr * wd * w`, `keras.optimizers.SGD`'s, reproduced on the torch side)
  or `none`; `--optimizer adam`: PyTorch's Adam (`paper`) or AdamW (`keras`) on both;
  `--recipe paper` instead gives each side the method's own recipe: the reference
  the official code's (`OFFICIAL_RECIPES`, so far DINO's SGD with its warm-up,
  cosine, decay and clipping), keras_ssl `keras_ssl.recipes.paper_optimizer`;
- views: each method's paper augmentations, per image, on both sides (the
  reference's are torch tensor ops, torchvision's sampling; see torch_methods).

What differs, on purpose, is what the official codes do differently from
keras_ssl (the target update after vs before the step, frozen layers' gradient
dropped vs zeroed). The reference's BatchNorm sees each view alone in BYOL,
SimSiam, Barlow Twins and VICReg, as the official codes' and keras_ssl's
(`encoder_batches = "view"`, since 2026-12-06; before, keras_ssl ran both views
in one call); `--torch-bn joint` makes the reference run them together.

Printed: the loss at every epoch, weighted kNN top-1 (k=200, T=0.1, cosine,
the training subset as memory) on the first `--test-images` test images
after the last step, the random-init kNN, median seconds per step, and a
markdown table (also written to `--markdown FILE` if given).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# Each method's keras_ssl class; the reference of the same name is torch_methods.METHODS[name].
KERAS_CLASSES = {
    "byol": "BYOL",
    "dino": "DINO",
    "simclr": "SimCLR",
    "moco2": "MoCoV2",
    "barlow_twins": "BarlowTwins",
    "swav": "SwAV",
    "simsiam": "SimSiam",
    "vicreg": "VICReg",
    "tico": "TiCo",
    "vibcreg": "VIbCReg",
    "fastsiam": "FastSiam",
    "wmse": "WMSE",
    "nnclr": "NNCLR",
    "moco3": "MoCoV3",
    "ressl": "ReSSL",
    "mmcr": "MMCR",
    "nnbyol": "NNBYOL",
    "nnsiam": "NNSiam",
    "dcl": "SimCLR",  # with loss="dcl" (keras_only_options)
    "dclw": "SimCLR",  # with loss="dclw"
    "supcon": "SupCon",  # supervised: both sides get each batch's labels
    "deepclusterv2": "DeepClusterV2",  # both sides get each batch's dataset indices
    "mae": "MAE",  # a ViT (vit_sizes), not the ResNet
    "simmim": "SimMIM",
    "msn": "MSN",
    "ijepa": "IJEPA",
    "ibot": "IBOT",
    "dinov2": "DINOv2",
}
MULTICROP = ("dino", "swav", "deepclusterv2", "msn", "ibot", "dinov2")  # views of more than one size
VIT = ("mae", "simmim", "msn", "ijepa", "ibot", "dinov2")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(KERAS_CLASSES))
    p.add_argument("--backends", default="jax", help="comma list of Keras backends")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--test-images", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--lr", type=float, default=0.12)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument(
        "--decay",
        choices=("paper", "keras", "none"),
        default="paper",
        help="paper: L2 in the gradient (torch.optim.SGD/Adam); keras: decoupled (keras.optimizers.SGD, AdamW)",
    )
    p.add_argument("--exclude-norm-bias", action="store_true", help="no decay on biases and norm parameters")
    p.add_argument(
        "--recipe",
        choices=("shared", "paper"),
        default="shared",
        help="shared: the settings above on both sides; paper: the method's official optimizer and schedule "
        f"(methods {', '.join(sorted(OFFICIAL_RECIPES))}; --optimizer, --lr, --weight-decay, --decay and "
        "--exclude-norm-bias are then unused): the reference takes them from the official code (OFFICIAL_RECIPES), "
        "keras_ssl from keras_ssl.recipes.paper_optimizer (the CLI's --recipe paper)",
    )
    p.add_argument(
        "--init",
        choices=("keras", "torch", "torchvision"),
        default="keras",
        help="initial weights, the same arrays on both sides: Keras's conventions, PyTorch's module defaults, "
        "or torchvision's ResNet (kaiming-normal fan-out convolutions)",
    )
    p.add_argument(
        "--torch-bn",
        choices=("official", "joint"),
        default="official",
        help="the reference's BatchNorm batches: the official codes' (per view for BYOL, SimSiam, Barlow Twins, "
        "VICReg, as keras_ssl's) or joint (same-size views together, as keras_ssl's before 2026-12-06)",
    )
    p.add_argument(
        "--options",
        default=None,
        help="JSON of method options for both sides, over method_options(), e.g. DINO with "
        'lightly\'s CIFAR-10 head: \'{"use_bn_in_head": true, "output_dim": 2048}\'',
    )
    p.add_argument(
        "--keras-views",
        choices=("own", "reference"),
        default="own",
        help="own: keras_ssl draws its views; reference: it trains on the very views the reference drew at "
        "each step (its augmentations from the same generator), so only the training differs. Methods whose "
        "views share one size and that need no labels",
    )
    p.add_argument(
        "--torch-views",
        choices=("own", "keras"),
        default="own",
        help="own: the reference draws its views; keras: it trains on keras_ssl's view maker's views (the "
        "method's keras_ssl model, built in the reference's process on Keras's torch backend, seeded as the "
        "keras_ssl run's), the mirror of --keras-views reference",
    )
    p.add_argument(
        "--perturb",
        type=float,
        default=0.0,
        help="the reference's noise floor: it trains from the shared initial weights scaled by 1 + perturb * "
        "N(0, 1) (the arrays handed to keras_ssl stay unscaled), so a rerun of the same seed, views and data "
        "differs from the first by float-rounding-size noise only; 1e-6 is float32's",
    )
    p.add_argument("--workdir", default=None, help="where the shared initial weights go (default: a temp dir)")
    p.add_argument("--markdown", default=None, help="also write the markdown table to this file")
    p.add_argument("--run", default=None, help="one run: torch:METHOD:SEED or keras:BACKEND:METHOD:SEED")
    return p.parse_args(argv)


# Each method's official optimizer, written from its source, not from keras_ssl.recipes (whose numbers
# the runs check). The warm-up is capped at a tenth of the run, as the CLI caps it for short runs.
OFFICIAL_RECIPES = {
    # facebookresearch/dino README's ResNet-50 command (--optimizer sgd --lr 0.03 --weight_decay 1e-4
    # --weight_decay_end 1e-4) and main_dino.py's defaults: lr * batch / 256, 10 warm-up epochs,
    # min_lr 1e-6, clip_grad 3.0 (per parameter), biases and 1-d parameters undecayed, SGD momentum 0.9.
    "dino": dict(lr=0.03, weight_decay=1e-4, warmup_epochs=10, min_lr=1e-6, clip_grad=3.0),
}


def dino_cosine_scheduler(base_value, final_value, total_iters, warmup_iters=0, start_warmup_value=0.0):
    """DINO's utils.cosine_scheduler (np.linspace warm-up, then a cosine to `final_value`), per iteration."""
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters) if warmup_iters > 0 else np.array([])
    iters = np.arange(total_iters - warmup_iters)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup, cosine))


def official_recipe(args, name, steps_per_epoch):
    """The reference's optimizer settings for `--recipe paper`: (lr per step, weight decay, clip or None)."""
    if name not in OFFICIAL_RECIPES:
        raise SystemExit(f"--recipe paper: no official recipe for {name!r} here; methods {sorted(OFFICIAL_RECIPES)}")
    r, total = OFFICIAL_RECIPES[name], steps_per_epoch * args.epochs
    peak = r["lr"] * args.batch_size / 256
    warmup = min(r["warmup_epochs"] * steps_per_epoch, total // 10)
    return dino_cosine_scheduler(peak, r["min_lr"], total, warmup), r["weight_decay"], r["clip_grad"]


def method_options(name, dim):
    """keras_ssl's defaults for an encoder of `dim` features, passed to both sides."""
    return {
        "byol": dict(projection_dim=256, hidden_dim=min(4096, 4 * dim), momentum=0.996, momentum_end=1.0),
        "dino": dict(
            output_dim=4096,
            hidden_dim=min(2048, 4 * dim),
            bottleneck_dim=256,
            student_temperature=0.1,
            teacher_temperature=0.04,
            center_momentum=0.9,
            momentum=0.996,
            momentum_end=1.0,
        ),
        "simclr": dict(temperature=0.5, projection_dim=128, hidden_dim=dim),
        "moco2": dict(temperature=0.2, queue_size=4096, projection_dim=128, hidden_dim=dim, momentum=0.99),
        "barlow_twins": dict(projection_dim=min(2048, 8 * dim), lambd=5e-3),
        "swav": dict(
            num_prototypes=512, projection_dim=128, hidden_dim=min(2048, 4 * dim), temperature=0.1, epsilon=0.05
        ),
        "simsiam": dict(projection_dim=min(2048, 4 * dim), prediction_dim=min(2048, 4 * dim) // 4),
        "vicreg": dict(projection_dim=min(2048, 8 * dim), sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=1e-4),
        "tico": dict(
            projection_dim=256, hidden_dim=min(4096, 4 * dim), beta=0.9, rho=8.0, momentum=0.99, momentum_end=1.0
        ),
        "vibcreg": dict(
            projection_dim=min(2048, 8 * dim),
            sim_coeff=25.0,
            std_coeff=25.0,
            cov_coeff=200.0,
            eps=1e-4,
            iternorm_groups=64,
            iternorm_iterations=5,
        ),
        "fastsiam": dict(num_views=4, projection_dim=min(2048, 4 * dim), prediction_dim=min(2048, 4 * dim) // 4),
        # The official CIFAR settings (--emb 64, head_size 1024, w_size 128): the batch must be a multiple of 128.
        "wmse": dict(num_views=2, projection_dim=64, hidden_dim=1024, w_size=128, w_iter=1, eps=0.0),
        "nnclr": dict(temperature=0.1, queue_size=4096, projection_dim=256, hidden_dim=min(2048, 4 * dim)),
        "moco3": dict(temperature=1.0, projection_dim=256, hidden_dim=dim, momentum=0.99, momentum_end=1.0),
        "ressl": dict(
            student_temperature=0.1,
            teacher_temperature=0.04,
            queue_size=4096,
            projection_dim=128,
            hidden_dim=dim,
            momentum=0.99,
        ),
        "mmcr": dict(num_views=8, projection_dim=128, hidden_dim=512, lmbda=0.0, momentum=None),
        "nnbyol": dict(
            queue_size=4096, projection_dim=256, hidden_dim=min(4096, 4 * dim), momentum=0.996, momentum_end=1.0
        ),
        "nnsiam": dict(queue_size=4096, projection_dim=min(2048, 4 * dim), prediction_dim=min(2048, 4 * dim) // 4),
        "dcl": dict(temperature=0.5, projection_dim=128, hidden_dim=dim),
        "dclw": dict(temperature=0.5, projection_dim=128, hidden_dim=dim, sigma=0.5),
        "supcon": dict(temperature=0.1, projection_dim=128, hidden_dim=dim),
        "mae": dict(mask_ratio=0.75, decoder_dim=128, decoder_depth=2, decoder_heads=4, norm_pix_loss=True),
        "simmim": dict(mask_patch_size=8, mask_ratio=0.6),
        # msn_vits16.yaml's loss and patch drop; the head narrower for ViT-Tiny (2048 for ViT-S).
        "msn": dict(
            num_prototypes=1024,
            hidden_dim=1024,
            output_dim=256,
            temperature=0.1,
            sharpen_temperature=0.25,
            me_max_weight=1.0,
            sinkhorn_iterations=3,
            label_smoothing=0.0,
            patch_drop=0.15,
            momentum=0.996,
            momentum_end=1.0,
        ),
        # The paper's masks on the 8 x 8 grid; keras_ssl's predictor (min(384, dim) wide, 6 deep, the encoder's heads).
        "ijepa": dict(
            predictor_depth=6,
            num_targets=4,
            target_scale=(0.15, 0.2),
            target_aspect=(0.75, 1.5),
            context_scale=(0.85, 1.0),
            loss="smooth_l1",
            momentum=0.996,
            momentum_end=1.0,
        ),
        # main_ibot.py's defaults and the paper's masks, one head for both losses (--shared_head true);
        # the head narrower for ViT-Tiny at 32 px (8192 outputs, 2048 wide for ViT-S/16).
        "ibot": dict(
            output_dim=4096,
            hidden_dim=1024,
            bottleneck_dim=256,
            shared_head=True,
            norm_last_layer=True,
            student_temperature=0.1,
            teacher_temperature=0.04,
            warmup_teacher_temperature=0.04,
            teacher_patch_temperature=0.07,
            warmup_teacher_patch_temperature=0.04,
            center_momentum=0.9,
            patch_center_momentum=0.9,
            mask_ratio=(0.1, 0.5),
            mask_probability=0.5,
            cls_weight=1.0,
            patch_weight=1.0,
            momentum=0.996,
            momentum_end=1.0,
        ),
        # ssl_default_config.yaml's loss weights, temperatures, masks and momentum, the paper's Sinkhorn-Knopp
        # centring (keras_ssl's default); the head narrower (65536 outputs, 2048 wide).
        "dinov2": dict(
            output_dim=4096,
            hidden_dim=1024,
            bottleneck_dim=256,
            shared_head=True,
            norm_last_layer=False,
            centering="sinkhorn_knopp",
            koleo_weight=0.1,
            student_temperature=0.1,
            teacher_temperature=0.07,
            warmup_teacher_temperature=0.04,
            mask_ratio=(0.1, 0.5),
            mask_probability=0.5,
            cls_weight=1.0,
            patch_weight=1.0,
            momentum=0.992,
            momentum_end=1.0,
        ),
        # num_samples comes from the data (shared_options); the paper's 3 heads of 3000 clusters.
        "deepclusterv2": dict(
            num_prototypes=(3000, 3000, 3000),
            projection_dim=128,
            hidden_dim=min(2048, 4 * dim),
            temperature=0.1,
            kmeans_iterations=10,
        ),
    }[name]


def keras_only_options(name, steps_per_epoch):
    """Options only keras_ssl's constructors take: what the reference hard-codes (1 epoch frozen, 4 splits...)."""
    return {
        "dino": dict(warmup_teacher_temperature=0.04, warmup_teacher_steps=0, freeze_last_layer_steps=steps_per_epoch),
        "swav": dict(sinkhorn_iterations=3, freeze_prototypes_steps=steps_per_epoch, queue_size=0),
        "moco2": dict(split_batch_norm=True, num_splits=4, momentum_end=0.99),
        "simclr": dict(version=1),
        "barlow_twins": dict(scale=1.0),
        "vibcreg": dict(iternorm=True),
        "moco3": dict(projector_layers=2, split_batch_norm=False),
        # Constant momentum, as both official codes (keras_ssl's default; explicit so a changed default shows).
        "ressl": dict(momentum_end=None),
        "mmcr": dict(momentum_end=None),
        "dcl": dict(version=1, loss="dcl"),
        "dclw": dict(version=1, loss="dclw"),
        # The reference's last layer frozen and teacher temperatures warmed up over its first epoch.
        "ibot": dict(warmup_teacher_steps=steps_per_epoch, freeze_last_layer_steps=steps_per_epoch),
        "dinov2": dict(warmup_teacher_steps=steps_per_epoch, freeze_last_layer_steps=steps_per_epoch),
    }.get(name, {})


def feature_dim(width):
    return 8 * max(16, int(round(64 * width)))


def vit_sizes(width):
    """The ViT methods' encoder at `--width`: ViT-Tiny (192 wide, 3 heads, 12 blocks) at 0.25, on 4-pixel patches of 32."""
    dim = int(round(768 * width))
    return dict(image_size=32, patch_size=4, dim=dim, depth=12, heads=max(1, dim // 64))


# ---------------------------------------------------------------------- data


def load_cifar(args):
    """The training subset and test images; from the harness's copy in `--workdir` when there is one."""
    subset = os.path.join(args.workdir or "", f"cifar10_{args.images}_{args.test_images}.npz")
    if args.workdir and os.path.exists(subset):
        d = np.load(subset)
        return (d["x"], d["y"]), (d["xt"], d["yt"])
    path = os.path.join(os.environ.get("KERAS_SSL_DATA_DIR", "/work/shared/data"), "cifar10.npz")
    d = np.load(path)
    data = (
        (d["x_train"][: args.images], d["y_train"][: args.images].astype("int64")),
        (
            d["x_test"][: args.test_images],
            d["y_test"][: args.test_images].astype("int64"),
        ),
    )
    if args.workdir:  # every run reads the small copy, not the whole archive
        (x, y), (xt, yt) = data
        np.savez(subset, x=x, y=y, xt=xt, yt=yt)
    return data


def epoch_order(seed, epoch, n, batch_size):
    """Rows of epoch `epoch`, full batches only: the same on both sides."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[: (n // batch_size) * batch_size]


def knn_top1(train, train_y, test, test_y, k=200, t=0.1, classes=10):
    """Weighted kNN (InstDisc/DINO): cosine top-k neighbours vote with weight exp(sim / t)."""
    norm = lambda f: f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    train, test = norm(train.astype("float32")), norm(test.astype("float32"))
    k = min(k, len(train))
    correct = 0
    for start in range(0, len(test), 500):
        sim = test[start : start + 500] @ train.T
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        w = np.exp(np.take_along_axis(sim, idx, axis=1) / t)
        votes = np.stack([(w * (train_y[idx] == c)).sum(1) for c in range(classes)], 1)
        correct += int((votes.argmax(1) == test_y[start : start + 500]).sum())
    return correct / len(test)


def extra_options(args):
    """`--options` as a dict (both sides take them)."""
    options = json.loads(args.options or "{}")
    if not isinstance(options, dict):
        raise SystemExit(f"--options must be a JSON object, got {args.options!r}")
    return options


def shared_options(args, name):
    """Both sides' options: method_options, DeepCluster v2's `num_samples` (`--images`), then `--options`."""
    options = method_options(name, feature_dim(args.width))
    if name == "deepclusterv2":  # its memory holds every sample; no more clusters than samples
        n = args.images
        options.update(num_samples=n, num_prototypes=tuple(min(k, n) for k in options["num_prototypes"]))
    return {**options, **extra_options(args)}


def init_path(args, name, seed):
    tag = "".join(f"_{k}={v}" for k, v in sorted(extra_options(args).items()))
    return os.path.join(args.workdir, f"init_{name}_{seed}_{args.init}_w{args.width}{tag}.npz")


# --------------------------------------------------------------- torch side


def torch_images(a):
    """uint8 NHWC images as the reference's float NCHW batch in [0, 1]."""
    import torch

    return torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.0


def torch_features(method, images):
    """The reference encoder's eval-mode features (kNN, and `load_init`'s check), in chunks of 500."""
    import torch

    method.encoder.eval()
    with torch.no_grad():
        out = [method.encoder(torch_images(images[i : i + 500])).numpy() for i in range(0, len(images), 500)]
    method.encoder.train()
    return np.concatenate(out)


def run_torch(args, name, seed):
    import torch

    sys.path.insert(0, HERE)
    import torch_methods

    (x, y), (xt, yt) = load_cifar(args)
    steps_per_epoch = len(x) // args.batch_size
    total = steps_per_epoch * args.epochs
    options = shared_options(args, name)
    method = torch_methods.build(name, args.width, options, args.init, steps_per_epoch, total, seed)
    method.joint_views = args.torch_bn == "joint"
    features = lambda images: torch_features(method, images)

    start = time.perf_counter()
    random_knn = knn_top1(features(x), y, features(xt), yt)
    knn_seconds = time.perf_counter() - start
    np.savez(init_path(args, name, seed), check_x=x[:8], check_h=features(x[:8]), **method.keras_weights())
    if args.perturb:  # after the save: keras_ssl's runs start from the unscaled arrays
        perturb(method, args.perturb, seed)

    params = method.trainable()
    decay = args.weight_decay if args.decay != "none" else 0.0
    vectors = [p for p in params if p.ndim <= 1]
    matrices = [p for p in params if p.ndim > 1]
    groups = [{"params": matrices}, {"params": vectors, "weight_decay": 0.0 if args.exclude_norm_bias else None}]
    groups[1] = {k: v for k, v in groups[1].items() if v is not None}
    groups = [g for g in groups if g["params"]]
    coupled = decay if args.decay == "paper" else 0.0
    lr_at, clip = None, None
    if args.recipe == "paper":  # DINO's get_params_groups: no decay on biases and 1-d parameters
        lr_at, decay, clip = official_recipe(args, name, steps_per_epoch)
        groups = [{"params": matrices}, {"params": vectors, "weight_decay": 0.0}]
        opt = torch.optim.SGD(groups, lr=float(lr_at[0]), momentum=0.9, weight_decay=decay)
    elif args.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, weight_decay=coupled)
    else:
        opt = torch.optim.Adam(groups, lr=args.lr, weight_decay=coupled)

    def before_update(_views):
        if clip is not None:  # DINO's utils.clip_gradients: each parameter's gradient norm to `clip`
            for p in params:
                if p.grad is not None:
                    coef = clip / (p.grad.norm(2) + 1e-6)
                    if coef < 1:
                        p.grad.mul_(coef)
        if args.recipe == "shared" and args.decay == "keras" and decay:
            with torch.no_grad():  # Keras's decoupled decay, before the update, on every variable
                for p in params:
                    if not (args.exclude_norm_bias and p.ndim <= 1):
                        p.mul_(1 - args.lr * decay)

    if args.torch_views == "keras":
        keras_views = keras_view_maker(args, name, seed, steps_per_epoch)
        method.views = lambda images, gen: keras_views(images)
    gen = torch_methods.views_generator(seed)
    if hasattr(method, "init_memory"):  # DeepCluster v2's pass over the data before training, in epoch 0's order
        order = epoch_order(seed, 0, len(x), args.batch_size)
        method.init_memory(memory_batches(x, order, args.batch_size, steps_per_epoch), gen)
    losses, step_losses, times, cpu, step = [], [], [], [], 0
    for epoch in range(args.epochs):
        order, epoch_losses = epoch_order(seed, epoch, len(x), args.batch_size), []
        if hasattr(method, "begin_epoch"):  # DeepCluster v2's clustering of its memory
            method.begin_epoch(epoch)
        for i in range(steps_per_epoch):
            t0, c0 = time.perf_counter(), time.process_time()
            rows = order[i * args.batch_size : (i + 1) * args.batch_size]
            batch = torch_images(x[rows])
            if lr_at is not None:
                for group in opt.param_groups:
                    group["lr"] = float(lr_at[step])
            loss, _ = torch_step(method, opt, batch, gen, step, before_update, labels=y[rows], indices=rows)
            step += 1
            epoch_losses.append(loss.item())
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        losses.append(float(np.mean(epoch_losses)))
        step_losses += epoch_losses
        print(f"torch {name} seed {seed} epoch {epoch + 1}: loss {losses[-1]:.4f}", file=sys.stderr, flush=True)
    return {
        "losses": losses,
        "knn": knn_top1(features(x), y, features(xt), yt),
        "random_knn": random_knn,
        "step_seconds": times,
        "step_cpu_seconds": cpu,
        "step_losses": step_losses,
        "knn_seconds": knn_seconds,
    }


def memory_batches(x, order, batch_size, steps):
    """(float NCHW images, their rows) of `steps` batches of `order`: a reference's `init_memory` pass."""
    for i in range(steps):
        rows = order[i * batch_size : (i + 1) * batch_size]
        yield torch_images(x[rows]), rows


def keras_view_maker(args, name, seed, steps_per_epoch):
    """keras_ssl's views of float NCHW batches in [0, 1], as the reference's `views(images, gen)` returns them.

    The method's keras_ssl model on Keras's torch backend, seeded and built as run_keras seeds and
    builds it, so its view maker's draws start where the keras_ssl run's step 0 starts.
    """
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        raise SystemExit(f"--torch-views keras needs Keras's torch backend, not {keras.backend.backend()!r}")
    keras.utils.set_random_seed(seed)
    model = keras_model(args, name, seed, steps_per_epoch)
    model.build()

    def views(images):
        made = model.views(images.permute(0, 2, 3, 1).contiguous(), training=True)
        return [v.detach().cpu().permute(0, 3, 1, 2).contiguous() for v in made]

    return views


def perturb(method, scale, seed):
    """Scales each of the reference's parameters by 1 + scale N(0, 1) (drawn from `seed`): a noise-floor run."""
    import torch

    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.parameters():
            p.mul_(1 + scale * torch.randn(p.shape, generator=noise))


def torch_step(method, opt, images, gen, step, before_update=None, labels=None, indices=None):
    """One reference training step, as parity.py and parity_step0.py run it; returns (loss, views).

    `labels` (the batch's int array) go to a method that `needs_labels` (SupCon), `indices` (its
    images' rows in the dataset) to one that `needs_indices` (DeepCluster v2). The method's
    before-step (momentum schedules), its views of `images` (float NCHW in [0, 1], from
    torch_images) drawn from `gen`, its loss and gradient; the frozen layers' gradients dropped;
    then `before_update(views)` (clipping, decoupled decay, a recorded gradient), the update, and
    the method's after-step (targets, queues, centres).
    """
    import torch

    if getattr(method, "needs_labels", False):
        method.labels = torch.from_numpy(labels)
    if getattr(method, "needs_indices", False):
        method.indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    method.before_step(step)
    with torch.no_grad():
        views = method.views(images, gen)
    loss = method.loss(views, step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    method.drop_frozen_grads(step)
    if before_update is not None:
        before_update(views)
    opt.step()
    method.after_step(step)
    return loss, views


# --------------------------------------------------------------- keras side


def coupled_optimizer(base):
    """`base` (a Keras optimizer class) with L2 added to the gradient before its update, as torch.optim does."""
    import keras

    class Coupled(base):
        def __init__(self, *a, l2=0.0, exclude_vectors=False, **kw):
            super().__init__(*a, **kw)
            self.l2, self.exclude_vectors = float(l2), bool(exclude_vectors)

        def update_step(self, gradient, variable, learning_rate):
            if self.l2 and not (self.exclude_vectors and len(variable.shape) <= 1):
                gradient = gradient + self.l2 * keras.ops.cast(variable, gradient.dtype)
            return super().update_step(gradient, variable, learning_rate)

    Coupled.__name__ = f"Coupled{base.__name__}"
    return Coupled


def keras_optimizer(args):
    """The Keras side's optimizer: keras_ssl.optimizers' PyTorch-semantics SGD/Adam for `--decay paper`."""
    import keras

    import keras_ssl

    decay = args.weight_decay if args.decay != "none" else 0.0
    torch_like = getattr(keras_ssl.optimizers, "SGD" if args.optimizer == "sgd" else "Adam", None)
    if args.optimizer == "sgd":
        if args.decay == "keras":
            opt = keras.optimizers.SGD(args.lr, momentum=0.9, weight_decay=decay or None)
            if decay and args.exclude_norm_bias:
                opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
            return opt
        if torch_like is not None:
            return torch_like(args.lr, momentum=0.9, weight_decay=decay, exclude_bias_and_norm=args.exclude_norm_bias)
        return coupled_optimizer(keras.optimizers.SGD)(
            args.lr, momentum=0.9, l2=decay, exclude_vectors=args.exclude_norm_bias
        )
    if torch_like is None:
        raise SystemExit("--optimizer adam needs keras_ssl.optimizers.Adam (PyTorch's Adam/AdamW)")
    return torch_like(
        args.lr,
        weight_decay=decay,
        decoupled_weight_decay=args.decay == "keras",
        exclude_bias_and_norm=args.exclude_norm_bias,
    )


def load_init(model, path):
    """The reference's initial weights into `model` (online networks), then targets := online."""
    import keras

    saved = np.load(path)
    if "enc/patch_embed/kernel" in saved:  # a ViT method's layout (torch_vit.keras_arrays, torch_vit_ijepa's)
        sys.path.insert(0, HERE)
        import torch_vit

        if "pred/embed/kernel" in saved:  # I-JEPA: context encoder, target encoder, predictor
            import torch_vit_ijepa

            layout = {k: saved[k] for k in saved if k.startswith(("enc/", "tgt/", "pred/"))}
            torch_vit_ijepa.assign_keras(model, layout)
        else:
            torch_vit.assign_keras(model, {k: saved[k] for k in saved if k.startswith(("enc/", "dec/"))})
        if "msn/prototypes" in saved:  # MSN: the head's weights in MSNHead's order (BatchNorm statistics too)
            head = [w for layer in model.head.blocks for w in layer.weights]
            arrays = [saved[f"msn/head/{i}"] for i in range(sum(k.startswith("msn/head/") for k in saved))]
            if [tuple(w.shape) for w in head] != [a.shape for a in arrays]:
                raise ValueError(f"MSN head: keras {[tuple(w.shape) for w in head]} vs {[a.shape for a in arrays]}")
            for w, a in zip(head, arrays):
                w.assign(a)
            model.prototypes.assign(saved["msn/prototypes"])
        if "distill/mask_token" in saved:  # iBOT, DINOv2: the heads in DINOHead's layout, the mask token
            for attr in sorted({k.split("/")[1] for k in saved if k.startswith("distill/") and k.count("/") > 1}):
                head = getattr(model, attr)
                weights = {f"mlp/{i}/{w}": getattr(d, w) for i, d in enumerate(head.mlp) for w in ("kernel", "bias")}
                weights.update(last_v=head.last_v, last_g=head.last_g)
                keys = {k[len(f"distill/{attr}/") :] for k in saved if k.startswith(f"distill/{attr}/")}
                if keys != set(weights):
                    raise ValueError(f"{attr}: keras {sorted(weights)} vs reference {sorted(keys)}")
                for key, w in weights.items():
                    array = saved[f"distill/{attr}/{key}"]
                    if tuple(w.shape) != array.shape:
                        raise ValueError(f"{attr}/{key}: keras {tuple(w.shape)} vs reference {array.shape}")
                    w.assign(array)
            model.mask_token.assign(saved["distill/mask_token"].reshape(tuple(model.mask_token.shape)))
        copy_targets(model)
        h = model.encoder(keras.ops.convert_to_tensor(saved["check_x"].astype("float32") / 255.0), training=False)
        return float(np.max(np.abs(keras.ops.convert_to_numpy(h) - saved["check_h"])))
    for layer in model.encoder.layers:
        for w in layer.weights:
            key = f"enc/{layer.name}/{w.name}"
            if key in saved:
                if tuple(w.shape) != saved[key].shape:
                    raise ValueError(f"{key}: keras {tuple(w.shape)} vs reference {saved[key].shape}")
                w.assign(saved[key])
    enc_keys = {k for k in saved if k.startswith("enc/")}
    loaded = {f"enc/{layer.name}/{w.name}" for layer in model.encoder.layers for w in layer.weights}
    if enc_keys - loaded:
        raise ValueError(f"encoder weights not found in keras_ssl's encoder: {sorted(enc_keys - loaded)[:5]}")
    heads = sorted({k.split("/")[1] for k in saved if k.startswith("head/")})
    for attr in heads:
        weights = getattr(model, attr).trainable_weights
        arrays = [saved[f"head/{attr}/{i}"] for i in range(sum(k.startswith(f"head/{attr}/") for k in saved))]
        if [tuple(w.shape) for w in weights] != [a.shape for a in arrays]:
            raise ValueError(
                f"{attr}: keras {[tuple(w.shape) for w in weights]} vs reference {[a.shape for a in arrays]}"
            )
        for w, a in zip(weights, arrays):
            w.assign(a)
    copy_targets(model)
    h = model.encoder(keras.ops.convert_to_tensor(saved["check_x"].astype("float32") / 255.0), training=False)
    return float(np.max(np.abs(keras.ops.convert_to_numpy(h) - saved["check_h"])))


def copy_targets(model):
    """targets := online (every weight, BatchNorm statistics too), as the references' copies start."""
    import keras

    for online, target in model.momentum_pairs:
        for o, t in zip(getattr(model, online).weights, getattr(model, target).weights):
            # A copy: under JAX `t.assign(o)` shares o's buffer, which the compiled step then donates twice.
            t.assign(keras.ops.convert_to_numpy(o))


def step_loss(running):
    """The last step's loss from Keras's logged running means of an epoch's steps, `running` (mean of 1..n)."""
    n = len(running)
    return n * running[-1] - (n - 1) * (running[-2] if n > 1 else 0.0)


def keras_model(args, name, seed, steps_per_epoch):
    """keras_ssl's model of `name` on the CIFAR ResNet-18 at `--width`, with the options the reference takes."""
    import keras_ssl

    multicrop = name in MULTICROP
    if name in VIT:  # the method's own ViT options (MAE: sine-cosine positions, ImageNet standardisation)
        cls = getattr(keras_ssl, KERAS_CLASSES[name])
        # Stochastic depth off, as on the reference's side: its random drops could not be shared.
        vit_options = {**cls.vit_options, "drop_path": 0.0}
        encoder = keras_ssl.backbones.vit(**vit_sizes(args.width), **vit_options, initializer=cls.vit_init)
    else:
        encoder = keras_ssl.backbones.resnet18(
            (None, None, 3) if multicrop else (32, 32, 3), stem="cifar", width=args.width
        )
    options = {**shared_options(args, name), **keras_only_options(name, steps_per_epoch)}
    if multicrop:
        options["input_shape"] = (32, 32, 3)
    return getattr(keras_ssl, KERAS_CLASSES[name])(encoder, seed=seed, **options)


def reference_views(args, name, seed, x, steps_per_epoch):
    """The views the reference draws from `x` at each step, as `epoch_views(order)`: an epoch's batches, each
    its views stacked along the batch axis (float NHWC in [0, 1]; `len(views)` × batch rows per step).

    A second reference object (the same build, the same generator) redraws them: its augmentations take
    only the generator's numbers, so the draws are the training run's (test_parity_bench checks this).
    """
    import torch

    sys.path.insert(0, HERE)
    import torch_methods

    if name in MULTICROP or KERAS_CLASSES[name] == "SupCon":
        raise SystemExit(f"--keras-views reference: {name}'s views differ in size or need labels; own views only")
    total = steps_per_epoch * args.epochs
    method = torch_methods.build(name, args.width, shared_options(args, name), args.init, steps_per_epoch, total, seed)
    gen = torch_methods.views_generator(seed)

    def epoch_views(order):
        out = []
        for i in range(steps_per_epoch):
            with torch.no_grad():
                views = method.views(torch_images(x[order[i * args.batch_size : (i + 1) * args.batch_size]]), gen)
            out.append(torch.cat(views).permute(0, 2, 3, 1).numpy())
        return np.concatenate(out), len(views)

    return epoch_views


def run_keras(args, backend, name, seed):
    os.environ["KERAS_BACKEND"] = backend
    import keras

    import keras_ssl

    (x, y), (xt, yt) = load_cifar(args)
    steps_per_epoch = len(x) // args.batch_size
    total = steps_per_epoch * args.epochs
    keras.utils.set_random_seed(seed)
    model = keras_model(args, name, seed, steps_per_epoch)
    if args.recipe == "paper":
        official_recipe(args, name, steps_per_epoch)  # the same methods as the reference
        optimizer = keras_ssl.recipes.paper_optimizer(name, args.batch_size, steps_per_epoch, args.epochs)
    else:
        optimizer = keras_optimizer(args)
    model.compile(optimizer=optimizer)
    model.build()
    init_check = load_init(model, init_path(args, name, seed))

    times, cpu, step_losses, running = [], [], [], []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, batch, logs=None):
            # Reading the loss waits for the step (JAX dispatches asynchronously); Keras logs the epoch's running mean.
            running.append(float(keras.ops.convert_to_numpy(logs["loss"])))
            step_losses.append(step_loss(running))
            times.append(time.perf_counter() - self.t0)
            cpu.append(time.process_time() - self.c0)

    features = lambda images: model.encoder.predict(images.astype("float32") / 255.0, batch_size=500, verbose=0)
    redraw = reference_views(args, name, seed, x, steps_per_epoch) if args.keras_views == "reference" else None
    losses = []
    for epoch in range(args.epochs):
        order = epoch_order(seed, epoch, len(x), args.batch_size)
        inputs, batch = x[order], args.batch_size
        if redraw is not None:  # each step's rows are its views, stacked; the view maker splits them again
            inputs, count = redraw(order)
            batch = count * args.batch_size
            # object.__setattr__: a plain function where the view maker layer was (torch's Module refuses one).
            object.__setattr__(model, "views", lambda images, training=True: keras.ops.split(images, count, axis=0))
        if model.needs_indices:  # each batch with its images' rows in x (not in the permuted copy)
            inputs = [
                (inputs[i * batch : (i + 1) * batch], order[i * batch : (i + 1) * batch])
                for i in range(len(x) // batch)
            ]
            batch = None
        running.clear()
        history = model.fit(
            inputs,
            y[order] if model.needs_labels else None,
            epochs=1,
            batch_size=batch,
            shuffle=False,
            verbose=0,
            callbacks=[keras_ssl.callbacks.MomentumScheduler(total_steps=total), Timer()],
        )
        losses.append(float(history.history["loss"][-1]))
        print(
            f"keras/{backend} {name} seed {seed} epoch {epoch + 1}: loss {losses[-1]:.4f}", file=sys.stderr, flush=True
        )
    if int(keras.ops.convert_to_numpy(model.step)) != total:
        raise RuntimeError(f"keras_ssl took {int(model.step)} steps, the reference {total}")
    return {
        "losses": losses,
        "knn": knn_top1(features(x), y, features(xt), yt),
        "step_seconds": times,
        "step_cpu_seconds": cpu,
        "step_losses": step_losses,
        "init_check": init_check,
        "optimizer": f"{type(optimizer).__module__}.{type(optimizer).__name__}",
    }


# ------------------------------------------------------------------ harness


def measure(run, args):
    """One run in a fresh process; its JSON result, or None."""
    argv = [sys.executable, os.path.abspath(__file__), "--run", run]
    for key, value in vars(args).items():
        if key in ("run", "methods", "backends", "seeds", "markdown") or value is None or value is False:
            continue
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        print(f"{run}: failed\n{proc.stderr[-3000:]}", flush=True)
        return None
    result = json.loads(lines[-1])
    result["wall_seconds"] = time.perf_counter() - start
    steps = result["step_seconds"]
    print(
        f"{run}: loss per epoch {' '.join(f'{v:.4f}' for v in result['losses'])}; kNN {result['knn']:.4f}"
        + (f" (random init {result['random_knn']:.4f})" if "random_knn" in result else "")
        + (f"; init check {result['init_check']:.1e}, {result['optimizer']}" if "init_check" in result else "")
        + f"; {np.median(steps):.3f} s/step, CPU {np.median(result['step_cpu_seconds']):.3f} s/step"
        f" (first step {steps[0]:.1f} s); wall {result['wall_seconds']:.0f} s",
        flush=True,
    )
    return result


def table(args, results):
    seeds = args.seeds.split(",")
    sides = ["torch reference"] + [f"keras_ssl ({b})" for b in args.backends.split(",")]
    head = "| method | implementation | " + " | ".join(f"kNN seed {s}" for s in seeds)
    head += " | last-epoch loss (" + " / ".join(f"seed {s}" for s in seeds) + ") | random-init kNN | s/step |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in args.methods.split(","):
        for side in sides:
            runs = [results.get((name, side, s)) for s in seeds]
            knn = " | ".join(f"{r['knn']:.3f}" if r else "failed" for r in runs)
            loss = " / ".join(f"{r['losses'][-1]:.3f}" if r else "-" for r in runs)
            rand = [results.get((name, "torch reference", s)) for s in seeds]
            rand = " / ".join(f"{r['random_knn']:.3f}" for r in rand if r)
            speed = [np.median(r["step_seconds"]) for r in runs if r]
            lines.append(
                f"| {name} | {side} | {knn} | {loss} | {rand} | {np.mean(speed):.2f} |"
                if speed
                else f"| {name} | {side} | {knn} | {loss} | {rand} | - |"
            )
    return "\n".join(lines)


def main():
    args = parse()
    if args.run:
        kind, *rest = args.run.split(":")
        if kind == "torch":
            result = run_torch(args, rest[0], int(rest[1]))
        elif kind == "keras":
            result = run_keras(args, rest[0], rest[1], int(rest[2]))
        else:
            raise SystemExit(f"--run must be torch:METHOD:SEED or keras:BACKEND:METHOD:SEED, got {args.run!r}")
        print(json.dumps(result))
        return
    unknown = set(args.methods.split(",")) - set(KERAS_CLASSES)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; known: {', '.join(KERAS_CLASSES)}")
    if args.recipe == "paper" and set(args.methods.split(",")) - set(OFFICIAL_RECIPES):
        raise SystemExit(f"--recipe paper has official recipes for {sorted(OFFICIAL_RECIPES)} only, got {args.methods}")
    if args.images < args.batch_size:
        raise SystemExit(f"--images {args.images} is less than one batch of {args.batch_size}")
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="parity_")
    os.makedirs(args.workdir, exist_ok=True)
    load_cifar(args)
    optimizer = (
        f"{args.optimizer} lr {args.lr} momentum 0.9, weight decay {args.weight_decay} ({args.decay} semantics"
        f"{', not on biases/norms' if args.exclude_norm_bias else ''})"
    )
    if args.recipe == "paper":
        optimizer = "each method's official optimizer and schedule (OFFICIAL_RECIPES; keras_ssl's paper_optimizer)"
    print(
        f"CIFAR-10 {args.images} images x {args.epochs} epochs, batch {args.batch_size} "
        f"({args.images // args.batch_size * args.epochs} steps), ResNet-18 x{args.width}, {optimizer}, "
        f"init {args.init} (the same arrays on both sides), "
        f"reference BN {args.torch_bn}; kNN k=200 T=0.1 on {args.test_images} test images",
        flush=True,
    )
    results = {}
    for name in args.methods.split(","):
        for seed in args.seeds.split(","):
            results[name, "torch reference", seed] = measure(f"torch:{name}:{seed}", args)
            if results[name, "torch reference", seed] is None:
                continue  # no shared initial weights for the Keras runs
            for backend in args.backends.split(","):
                results[name, f"keras_ssl ({backend})", seed] = measure(f"keras:{backend}:{name}:{seed}", args)
    markdown = table(args, results)
    print("\n" + markdown)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown + "\n")


if __name__ == "__main__":
    main()
