"""Quality of every image method on CIFAR-10: kNN top-1 of the trained encoder vs random init.

    KERAS_BACKEND=tensorflow python benchmarks/quality.py                # all methods, CPU budget
    KERAS_BACKEND=jax python benchmarks/quality.py --methods simclr,byol --epochs 5
    KERAS_BACKEND=jax python benchmarks/quality.py --full                # standard protocol (GPU)

Reads `$KERAS_SSL_DATA_DIR/cifar10.npz` (else downloads CIFAR-10). Each method
starts from the same random encoder (same seed); the score is weighted kNN
top-1 (k=200, T=0.1, cosine, on encoder features, never the projector) on the
CIFAR-10 test set, with the training images as the kNN memory. The encoder is
the one the paper evaluates (`model.feature_encoder`: DINO's, iBOT's and
DINOv2's teacher, I-JEPA's and MSN's target encoder; the online one's kNN is
printed beside it).

Budgets:
- default (2 CPU cores): 5,000 training images, 3 epochs, batch 256,
  `tiny_encoder` width 16 (64 features), Adam 1e-3 (SimSiam, FastSiam, NNSiam:
  SimSiam's CIFAR SGD, 0.03 x batch / 256, PyTorch's weight decay 5e-4); the ViT
  methods (MAE, iBOT, DINOv2, I-JEPA, SimMIM, MSN) on a 2-block ViT (dim 64,
  patch 4; `--vit-depth`, `--vit-dim`, `--vit-heads`; mean pooling for I-JEPA and
  SimMIM, whose class token gets no loss), each backbone drawn and positioned as
  the method's official code does (its `vit_init`, `vit_options`,
  `resnet_init`; I-JEPA's predictor in the paper's proportions to its ViT).
  Enough to show each method learns, not to rank them. MAE,
  I-JEPA and SimMIM also get a linear probe (30 epochs on the frozen features) and,
  with `--fine-tune EPOCHS`, a fine-tuning with layer-wise rate decay.
- `--full` (a GPU): all 50,000 images, 200 epochs, batch 512, CIFAR
  ResNet-18 (MAE: ViT-Tiny/4), each method with its paper's optimiser
  (`keras_ssl.recipes`: LARS, SGD, Adam or AdamW at the batch-scaled rate,
  weight decay in PyTorch's coupled terms where the paper's is, warm-up, cosine).

`--random-seeds 0,1,2` trains nothing: it scores each method's encoder at random init, drawn at
each seed as above, and prints their spread, the noise floor a kNN gain must clear.

Also printed: training images/s after the first epoch (compilation excluded),
each image seen in all of the method's views.

CLIP, SigLIP and SLIP need captions: `benchmarks/clip_cifar10.py --method clip|siglip|slip` reports
their zero-shot accuracy. SupCon trains on the labels (supervised): its row is an upper reference
for the self-supervised ones, not one of them.
"""

import argparse
import json
import logging
import math
import time

import keras

import keras_ssl
from keras_ssl.recipes import paper_optimizer


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--methods",
        default="simclr,moco2,moco3,byol,nnclr,simsiam,barlow_twins,vicreg,swav,dino,mae,ibot,dinov2,ijepa,simmim,msn,"
        "simclr_dcl,simclr_dclw,supcon,fastsiam,nnbyol,nnsiam,tico,vibcreg,mmcr,wmse,ressl,deepclusterv2",
    )
    p.add_argument("--full", action="store_true", help="standard protocol: 50k images, 200 epochs, ResNet-18")
    p.add_argument("--images", type=int, default=None, help="training images (default 5000; --full 50000)")
    p.add_argument("--test-images", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=None, help="default 3; --full 200")
    p.add_argument("--batch-size", type=int, default=None, help="default 256; --full 512")
    p.add_argument("--width", type=int, default=16, help="tiny_encoder width (CPU budget)")
    p.add_argument("--vit-depth", type=int, default=2, help="blocks of the CPU budget's ViT")
    p.add_argument("--vit-dim", type=int, default=64, help="width of the CPU budget's ViT")
    p.add_argument("--vit-heads", type=int, default=None, help="attention heads of that ViT (default: dim / 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--random-seeds",
        default=None,
        metavar="SEEDS",
        help="only score each method's random-init encoder, drawn at each of these seeds (e.g. 0,1,2), and print "
        "their spread: the noise floor a trained encoder's kNN gain must clear; no training",
    )
    p.add_argument(
        "--paper-optimizer",
        action="store_true",
        help="at the CPU budget too: each method's paper optimizer (keras_ssl.recipes: kind, lr scaled to the "
        "batch, weight decay), warmed up over the first epoch then cosine, instead of constant Adam 1e-3",
    )
    p.add_argument(
        "--fine-tune",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="also fine-tune MAE, I-JEPA and SimMIM (random init and trained) for EPOCHS on the labelled training "
        "images (evaluation.fine_tune, ViT layer decay --layer-decay) and report test top-1",
    )
    p.add_argument("--layer-decay", type=float, default=0.75, help="the fine-tuning's layer-wise rate decay")
    p.add_argument(
        "--options",
        default=None,
        metavar="JSON",
        help="constructor options for every method run, over the table's, e.g. I-JEPA with a predictor "
        'scaled to the ViT: --options \'{"predictor_depth": 1, "predictor_dim": 32}\'',
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="print each epoch's loss and time as it ends (a long run is otherwise silent until its row)",
    )
    args = p.parse_args()
    try:
        options = json.loads(args.options or "{}")
    except json.JSONDecodeError as error:
        p.error(f"--options is not JSON ({error}): {args.options!r}")
    if not isinstance(options, dict):
        p.error(f"--options must be a JSON object, got {args.options!r}")
    args.options = options
    args.images = args.images or (50000 if args.full else 5000)
    args.epochs = args.epochs or (200 if args.full else 3)
    args.batch_size = args.batch_size or (512 if args.full else 256)
    return args


# (class, constructor options, the keras_ssl.recipes entry of its --full / --paper-optimizer optimiser)
MULTICROP = dict(input_shape=(32, 32, 3))  # default views: 2 global crops, 4 local of 16 px
METHODS = {
    "simclr": (keras_ssl.SimCLR, dict(temperature=0.2), "simclr"),
    "moco2": (keras_ssl.MoCoV2, dict(queue_size=4096), "moco"),
    "moco3": (keras_ssl.MoCoV3, dict(), "moco_v3"),
    "byol": (keras_ssl.BYOL, dict(momentum=0.99), "byol"),
    "nnclr": (keras_ssl.NNCLR, dict(queue_size=4096, temperature=0.2), "nnclr"),
    "simsiam": (keras_ssl.SimSiam, dict(), "simsiam"),
    "barlow_twins": (keras_ssl.BarlowTwins, dict(), "barlow_twins"),
    "vicreg": (keras_ssl.VICReg, dict(), "vicreg"),
    "swav": (keras_ssl.SwAV, dict(num_prototypes=512, **MULTICROP), "swav"),
    "dino": (keras_ssl.DINO, dict(output_dim=4096, momentum=0.99, **MULTICROP), "dino"),
    "mae": (keras_ssl.MAE, dict(mask_ratio=0.75), "mae"),
    "ibot": (keras_ssl.IBOT, dict(output_dim=4096, momentum=0.99), "ibot"),
    "dinov2": (keras_ssl.DINOv2, dict(output_dim=4096, momentum=0.99), "dinov2"),
    "ijepa": (keras_ssl.IJEPA, dict(), "ijepa"),
    "simmim": (keras_ssl.SimMIM, dict(), "simmim"),
    "msn": (keras_ssl.MSN, dict(num_prototypes=512, momentum=0.99), "msn"),
    "simclr_dcl": (keras_ssl.SimCLR, dict(temperature=0.2, loss="dcl"), "simclr"),
    "simclr_dclw": (keras_ssl.SimCLR, dict(temperature=0.2, loss="dclw"), "simclr"),
    "supcon": (keras_ssl.SupCon, dict(), "supcon"),  # trains on the CIFAR-10 labels
    "fastsiam": (keras_ssl.FastSiam, dict(), "fastsiam"),
    "nnbyol": (keras_ssl.NNBYOL, dict(momentum=0.99), "nnbyol"),
    "nnsiam": (keras_ssl.NNSiam, dict(), "nnsiam"),
    "tico": (keras_ssl.TiCo, dict(), "tico"),
    "vibcreg": (keras_ssl.VIbCReg, dict(), "vibcreg"),
    "mmcr": (keras_ssl.MMCR, dict(num_views=4), "mmcr"),  # 4 views on a CPU (paper: 40)
    "wmse": (keras_ssl.WMSE, dict(), "wmse"),
    "ressl": (keras_ssl.ReSSL, dict(), "ressl"),
    "deepclusterv2": (keras_ssl.DeepClusterV2, dict(num_prototypes=(100, 100, 100), **MULTICROP), "deepclusterv2"),
}
# Siamese methods without negatives need SGD at this budget (Adam collapses SimSiam).
SGD_AT_CPU_BUDGET = ("simsiam", "fastsiam", "nnsiam")
# Every ViT method gets the same small ViT (mean pooling where the method trains no class token).
VIT_METHODS = {"mae": "cls", "ibot": "cls", "dinov2": "cls", "ijepa": "mean", "simmim": "mean", "msn": "cls"}
# Features meant for fine-tuning and linear probing: a linear probe is reported too.
PROBED = ("mae", "ijepa", "simmim")


def encoder(name, args):
    keras.utils.set_random_seed(args.seed)  # the same initial weights for every method
    multicrop = name in ("swav", "dino", "deepclusterv2")
    shape = (None, None, 3) if multicrop else (32, 32, 3)
    method = METHODS[name][0]  # each backbone drawn as the method's official code draws it
    if name in VIT_METHODS:
        vit = dict(image_size=32, patch_size=4, pool=VIT_METHODS[name], initializer=method.vit_init)
        vit |= method.vit_options
        if args.full:
            return keras_ssl.backbones.vit_tiny(**vit)
        heads = args.vit_heads or max(1, args.vit_dim // 32)
        return keras_ssl.backbones.vit(dim=args.vit_dim, depth=args.vit_depth, heads=heads, **vit)
    if args.full:
        init, zero_init_residual = method.resnet_init
        return keras_ssl.backbones.resnet18(
            shape, stem="cifar", initializer=init, zero_init_residual=zero_init_residual
        )
    return keras_ssl.backbones.tiny_encoder(shape, width=args.width)


def ijepa_predictor(args):
    """I-JEPA's predictor in the proportions of the paper's to its ViT-H/14 (12 of 32 blocks, 384 of 1280
    wide), widths rounded up to 32: 1 block of 32 on the 2x64 ViT, not the class default's 6 of 64,
    three times the encoder's depth at about eight times the step time."""
    width = 32 * math.ceil(args.vit_dim * 384 / 1280 / 32)
    return dict(predictor_depth=max(1, round(args.vit_depth * 12 / 32)), predictor_dim=width)


def optimizer(name, steps_per_epoch, args, model):
    if not (args.full or args.paper_optimizer):
        if name in SGD_AT_CPU_BUDGET:  # SimSiam's CIFAR SGD: every parameter decays, as main_simsiam.py
            return keras_ssl.optimizers.SGD(
                0.03 * args.batch_size / 256, momentum=0.9, weight_decay=5e-4, exclude_bias_and_norm=False
            )
        return keras.optimizers.Adam(1e-3)
    warmup = None if args.full else 1  # --full: the paper's warm-up (at most a tenth of the run)
    return paper_optimizer(
        METHODS[name][2], args.batch_size, steps_per_epoch, args.epochs, warmup_epochs=warmup, model=model
    )


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch; the first one includes compilation."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)

    def images_per_second(self, images):
        steady = self.seconds[1:] or self.seconds
        return images * len(steady) / sum(steady)


def main():
    args = parse()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # predict's retracing notes
    (x_train, y_train), (x_test, y_test) = keras_ssl.data.load("cifar10")
    x_train, y_train = x_train[: args.images], y_train[: args.images]
    x_test, y_test = x_test[: args.test_images], y_test[: args.test_images]
    steps_per_epoch = len(x_train) // args.batch_size

    def knn(enc):
        """kNN top-1 and the test features' RankMe (1: collapsed to a point or a line)."""
        train = keras_ssl.evaluation.embed(enc, x_train)
        test = keras_ssl.evaluation.embed(enc, x_test)
        return keras_ssl.evaluation.knn_accuracy(train, y_train, test, y_test)["top1"], keras_ssl.evaluation.rankme(
            test
        )

    def probe(enc, name):
        if name not in PROBED:
            return ""
        result = keras_ssl.evaluation.linear_probe(enc, x_train, y_train, x_test, y_test, epochs=30)
        text = f" {result['top1']:.4f}"
        if args.fine_tune:  # the protocol these methods are meant for
            tuned = keras_ssl.evaluation.fine_tune(
                enc, x_train, y_train, x_test, y_test, epochs=args.fine_tune, layer_decay=args.layer_decay
            )
            text += f" (fine-tuned {tuned['top1']:.4f})"
        return text

    budget = (
        "ResNet-18 (ViTs: ViT-Tiny/4)"
        if args.full
        else f"tiny_encoder x{args.width} (ViTs: {args.vit_depth}x{args.vit_dim})"
    )
    print(
        f"backend={keras.backend.backend()} images={len(x_train)} test={len(x_test)} epochs={args.epochs} "
        f"batch={args.batch_size} {budget}; kNN top-1 k=200 T=0.1"
    )
    if args.random_seeds is not None:
        seeds = [int(v) for v in args.random_seeds.split(",")]
        print(f"{'method':>13s} random-init kNN at seeds {', '.join(map(str, seeds))}; spread (max - min)")
        for name in args.methods.split(","):
            scores = [knn(encoder(name, argparse.Namespace(**{**vars(args), "seed": seed})))[0] for seed in seeds]
            print(f"{name:>13s} {' '.join(f'{v:.4f}' for v in scores)}; {max(scores) - min(scores):.4f}", flush=True)
        return
    print(
        f"{'method':>13s} {'random':>7s} {'trained':>8s} {'gain':>6s} {'loss first -> last':>20s} {'train s':>8s} "
        f"{'img/s':>6s} {'RankMe random -> trained':>25s} {'probe random -> trained':>24s}"
    )
    for name in args.methods.split(","):
        cls, options, _ = METHODS[name]
        before_encoder = encoder(name, args)
        (before, rank_before), probe_before = knn(before_encoder), probe(before_encoder, name)
        if name == "swav":
            options = dict(options, freeze_prototypes_steps=steps_per_epoch)
        if name in ("dino", "ibot", "dinov2"):
            options = dict(options, warmup_teacher_steps=args.epochs * steps_per_epoch // 3)
        if name == "deepclusterv2":
            options = dict(options, num_samples=len(x_train))
        if name == "ijepa" and not args.full:
            options = dict(options, **ijepa_predictor(args))
        model = cls(encoder(name, args), seed=args.seed, **{**options, **args.options})
        model.compile(optimizer=optimizer(name, steps_per_epoch, args, model))
        timer = EpochTimer()
        labels = y_train if model.needs_labels else None  # SupCon: supervised, the others never see labels
        history = model.fit(
            x_train,
            labels,
            epochs=args.epochs,
            batch_size=args.batch_size,
            verbose=2 if args.verbose else 0,
            callbacks=[timer],
        )
        loss = history.history["loss"]
        seconds = sum(timer.seconds)
        # The encoder the paper evaluates (DINO's teacher, I-JEPA's and MSN's target), as the CLI scores it.
        after, rank_after = knn(model.feature_encoder)
        online = ""
        if model.feature_encoder is not model.encoder:
            online = f" (online encoder {knn(model.encoder)[0]:.4f})"
        print(
            f"{name:>13s} {before:7.4f} {after:8.4f} {after - before:+6.3f} "
            f"{loss[0]:9.3f} -> {loss[-1]:7.3f} {seconds:8.0f} {timer.images_per_second(len(x_train)):6.0f}"
            f" {rank_before:11.1f} -> {rank_after:10.1f}"
            f"{probe_before}{' ->' if probe_before else ''}{probe(model.feature_encoder, name)}{online}",
            flush=True,
        )


if __name__ == "__main__":
    main()
