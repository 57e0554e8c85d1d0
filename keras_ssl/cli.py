"""The `keras-ssl` command line: pretrain, evaluate, export, plot.

With no arguments, `keras-ssl` runs a short SimCLR demo on scikit-learn's
bundled digits (no download) and reports kNN accuracy before and after.
"""

import argparse
import json
import os
import sys
import tempfile
import time


def _methods():
    from keras_ssl.methods import METHODS

    return METHODS


def build_parser():
    """The argument parser of `keras-ssl` (sub-commands and their options)."""
    parser = argparse.ArgumentParser(
        prog="keras-ssl",
        description="Self-supervised pretraining and evaluation on TensorFlow, JAX or PyTorch "
        "(pick with KERAS_BACKEND).",
    )
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("pretrain", help="train an encoder without labels")
    p.add_argument("--method", default="simclr", help="SSL method (e.g. simclr)")
    p.add_argument("--data", default="digits",
                   help="cifar10 | mnist | fashion_mnist | digits | path.npz | image folder")
    p.add_argument("--data-dir", default=None, help="where <name>.npz files are (else $KERAS_SSL_DATA_DIR)")
    p.add_argument("--backbone", default="tiny", help="tiny | resnet18 | resnet34 | resnet50")
    p.add_argument("--width", type=float, default=1.0, help="backbone width multiplier")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--temperature", type=float, default=None, help="loss temperature (default: the method's)")
    p.add_argument("--crop-scale", type=float, default=None,
                   help="smallest crop area fraction (default: the method's; 0.3 for digit data)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (default for digit data)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="runs/demo", help="run directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing encoder in --output")
    p.add_argument("--verbose", type=int, default=None, help="Keras fit verbosity (default: progress bar)")
    return parser


def main(argv=None):
    """Entry point of the `keras-ssl` console script.

    Args:
        argv: argument list (defaults to `sys.argv[1:]`); empty runs the demo.

    Example:
        >>> main(["pretrain", "--data", "digits", "--epochs", "2", "--output", "runs/x"])
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = ["pretrain", "--data", "digits", "--epochs", "10", "--batch-size", "64"]
        print("keras-ssl: no command given, running the SimCLR demo on digits "
              "(see `keras-ssl --help`).")
    args = build_parser().parse_args(argv)
    if args.command == "pretrain":
        return pretrain(args)
    build_parser().print_help()
    return 2


def _build_encoder(name, input_shape, width):
    from keras_ssl import backbones

    if name == "tiny":
        return backbones.tiny_encoder(input_shape=input_shape, width=int(32 * width))
    if name in ("resnet18", "resnet34", "resnet50"):
        stem = "cifar" if input_shape[0] <= 64 else "imagenet"
        return getattr(backbones, name)(input_shape=input_shape, stem=stem, width=width)
    raise ValueError(f"unknown --backbone {name!r}: use tiny, resnet18, resnet34 or resnet50.")


DIGITS = ("digits", "mnist")


def _method_options(args, method, x_train):
    """Constructor options from the command line, for the options the method has.

    On digit data flips change the class and small crops lose the digit, so
    the default view there is a crop of at least 30 % with no flip.
    """
    import inspect

    from keras_ssl.layers.augment import simclr_augmenter

    accepted = inspect.signature(method.__init__).parameters
    options = {}
    if args.temperature is not None and "temperature" in accepted:
        options["temperature"] = args.temperature
    digits = args.data in DIGITS
    scale = args.crop_scale if args.crop_scale is not None else (0.3 if digits else None)
    flip = not (args.no_flip or digits)
    if "augmenter" in accepted and (scale is not None or not flip):
        options["augmenter"] = simclr_augmenter(
            x_train.shape[1], channels=x_train.shape[-1], crop_scale=(scale or 0.08, 1.0),
            horizontal_flip=flip, seed=args.seed + 1,
        )
    return options


def _write_json(path, obj):
    # Write then rename, so a crash never leaves a half-written file.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def pretrain(args):
    """Runs `keras-ssl pretrain`: data, encoder, method, fit, kNN, files."""
    methods = _methods()
    if args.method not in methods:
        raise SystemExit(f"keras-ssl: unknown --method {args.method!r}; choose from {sorted(methods)}.")
    encoder_path = os.path.join(args.output, "encoder.keras")
    if os.path.exists(encoder_path) and not args.overwrite:
        raise SystemExit(f"keras-ssl: {encoder_path} exists; pass --overwrite to replace it.")

    import keras

    from keras_ssl import data, evaluation

    keras.utils.set_random_seed(args.seed)
    try:
        (x_train, y_train), (x_test, y_test) = data.load(args.data, data_dir=args.data_dir)
    except ValueError as e:
        raise SystemExit(f"keras-ssl: {e}")
    if args.limit:
        x_train, y_train = x_train[: args.limit], (None if y_train is None else y_train[: args.limit])
    print(f"backend {keras.backend.backend()} | data {args.data}: {len(x_train)} train images "
          f"{x_train.shape[1:]}, {len(x_test)} test | method {args.method} | backbone {args.backbone}")

    encoder = _build_encoder(args.backbone, x_train.shape[1:], args.width)
    model = methods[args.method](encoder, seed=args.seed, **_method_options(args, methods[args.method], x_train))
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))

    def knn():
        if y_train is None or y_test is None:
            return None
        tr = evaluation.embed(model.encoder, x_train)
        te = evaluation.embed(model.encoder, x_test)
        return evaluation.knn_accuracy(tr, y_train, te, y_test)["top1"]

    before = knn()
    if before is not None:
        print(f"kNN top-1 of the randomly initialised encoder: {before:.4f}")
    start = time.time()
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    history = model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size, verbose=verbose)
    seconds = time.time() - start
    after = knn()
    if after is not None:
        print(f"kNN top-1 after {args.epochs} epochs of {args.method}: {after:.4f} "
              f"(random init {before:.4f}) in {seconds:.0f} s")

    os.makedirs(args.output, exist_ok=True)
    # Save to a temporary file in the same directory, then rename: atomic.
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=args.output)
    os.close(fd)
    model.encoder.save(tmp)
    os.replace(tmp, encoder_path)
    record = {key: [float(v) for v in values] for key, values in history.history.items()}
    record.update(
        knn_before=before, knn_after=after, seconds=seconds, backend=keras.backend.backend(),
        method=args.method, data=args.data, epochs=args.epochs, batch_size=args.batch_size,
    )
    _write_json(os.path.join(args.output, "history.json"), record)
    print(f"wrote {encoder_path} and {os.path.join(args.output, 'history.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
