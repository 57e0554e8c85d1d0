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
    p.add_argument("--method", default="simclr",
                   help="SSL method: simclr, moco, moco_v3, byol, nnclr, simsiam, barlow_twins, "
                   "vicreg, swav, dino, mae (default: simclr)")
    p.add_argument("--data", default="digits",
                   help="cifar10 | mnist | fashion_mnist | digits | path.npz | image folder")
    p.add_argument("--data-dir", default=None, help="where <name>.npz files are (else $KERAS_SSL_DATA_DIR)")
    p.add_argument("--backbone", default=None,
                   help="tiny | resnet18 | resnet34 | resnet50 | vit_tiny | vit_small "
                   "(default: the method's, tiny; vit_tiny for MAE)")
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
    p.add_argument("--knn-every", type=int, default=None,
                   help="kNN accuracy every N epochs into the history (default 1, or 5 above 20k images; 0: off)")
    p.add_argument("--no-plots", action="store_true", help="do not write the run's PNG figures")

    e = sub.add_parser("evaluate", help="evaluate a saved encoder on a labelled dataset")
    e.add_argument("encoder", help="encoder .keras file (or a run directory holding encoder.keras)")
    e.add_argument("--data", default="digits", help="dataset, as for pretrain")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--protocol", default="knn", choices=["knn", "linear", "finetune"])
    e.add_argument("--k", type=int, default=200, help="kNN neighbours")
    e.add_argument("--temperature", type=float, default=0.1, help="kNN vote temperature")
    e.add_argument("--epochs", type=int, default=None, help="linear: 100, finetune: 10")
    e.add_argument("--batch-size", type=int, default=None, help="linear: 256, finetune: 64")
    e.add_argument("--label-fraction", type=float, default=1.0, help="finetune on this share of labels")
    e.add_argument("--limit", type=int, default=None, help="use only the first N training images")
    e.add_argument("--output", default=None, help="also write the result to this JSON file")

    x = sub.add_parser("export", help="extract the encoder of a saved SSL model")
    x.add_argument("model", help="whole-model .keras file (or a run directory holding model.keras)")
    x.add_argument("--output", required=True, help="encoder .keras file to write")
    x.add_argument("--overwrite", action="store_true")

    g = sub.add_parser("plot", help="draw a run's figures (curves, embedding map, retrieval)")
    g.add_argument("run", help="run directory written by pretrain")
    g.add_argument("--data-dir", default=None)
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
    commands = {"pretrain": pretrain, "evaluate": evaluate, "export": export, "plot": plot}
    if args.command not in commands:
        build_parser().print_help()
        return 2
    return commands[args.command](args)


def _build_encoder(name, input_shape, width, image_size):
    """The named backbone; `input_shape` may hold None for any spatial size."""
    from keras_ssl import backbones

    if name == "tiny":
        return backbones.tiny_encoder(input_shape=input_shape, width=int(32 * width))
    if name in ("resnet18", "resnet34", "resnet50"):
        stem = "cifar" if image_size <= 64 else "imagenet"
        return getattr(backbones, name)(input_shape=input_shape, stem=stem, width=width)
    if name in ("vit_tiny", "vit_small"):
        patch = 4 if image_size <= 64 else 16
        return getattr(backbones, name)(image_size=image_size, patch_size=patch, channels=input_shape[-1])
    raise ValueError(
        f"unknown --backbone {name!r}: use tiny, resnet18, resnet34, resnet50, vit_tiny or vit_small."
    )


DIGITS = ("digits", "mnist")


def _method_options(args, method, x_train):
    """Constructor options from the command line and the method's declarations.

    Every method gets its paper's views (`method.default_views`) for the
    data; on digit data flips change the class and small crops lose the
    digit, so there no crop is smaller than 30 % of the image and nothing
    is flipped.
    """
    options = {}
    if args.temperature is not None and "temperature" in method.hyperparameters():
        options["temperature"] = args.temperature
    digits = args.data in DIGITS
    scale = args.crop_scale if args.crop_scale is not None else (0.3 if digits else None)
    options["views"] = method.default_views(
        x_train.shape[1], channels=x_train.shape[-1], min_crop_scale=scale,
        horizontal_flip=not (args.no_flip or digits), seed=args.seed + 1,
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

    from keras_ssl import distribute, evaluation

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = _load_data(args.data, args.data_dir, args.limit)
    backbone = args.backbone or methods[args.method].default_backbone
    print(f"backend {distribute.backend()} | data {args.data}: {len(x_train)} train images "
          f"{x_train.shape[1:]}, {len(x_test)} test | method {args.method} | backbone {backbone}")

    method = methods[args.method]
    image_shape = tuple(x_train.shape[1:])
    # Multi-crop methods feed the encoder crops of two sizes.
    encoder_input = (None, None, image_shape[-1]) if method.local_views else image_shape
    encoder = _build_encoder(backbone, encoder_input, args.width, image_shape[0])
    model = method(encoder, input_shape=image_shape, seed=args.seed,
                   **_method_options(args, method, x_train))
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
    os.makedirs(args.output, exist_ok=True)

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
    callbacks = []
    every = args.knn_every if args.knn_every is not None else (1 if len(x_train) <= 20000 else 5)
    if every > 0 and y_train is not None and y_test is not None:
        from keras_ssl.callbacks import KNNMonitor

        callbacks.append(KNNMonitor(x_test, y_test, x_train=x_train, y_train=y_train, every=every))
    history = model.fit(x_train, epochs=args.epochs, batch_size=args.batch_size, verbose=verbose,
                        callbacks=callbacks)
    seconds = time.time() - start
    after = knn()
    if after is not None:
        print(f"kNN top-1 after {args.epochs} epochs of {args.method}: {after:.4f} "
              f"(random init {before:.4f}) in {seconds:.0f} s")

    _save_atomic(model.encoder, encoder_path)
    _save_atomic(model, os.path.join(args.output, "model.keras"))
    record = {key: [float(v) for v in values] for key, values in history.history.items()}
    record.update(
        knn_before=before, knn_after=after, seconds=seconds, backend=distribute.backend(),
        method=args.method, data=args.data, epochs=args.epochs, batch_size=args.batch_size,
        limit=args.limit,
    )
    _write_json(os.path.join(args.output, "history.json"), record)
    print(f"wrote {encoder_path}, model.keras and history.json in {args.output}")
    if not args.no_plots:
        _write_plots(args.output, record, model.encoder, (x_train, y_train), (x_test, y_test),
                     model.views)
    return 0


def _save_atomic(model, path):
    # Save to a temporary file in the same directory, then rename: a crash
    # never leaves a half-written file where the old one was.
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=os.path.dirname(path) or ".")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_plots(run_dir, record, encoder, train, test, views=None):
    """Training curves, augmented views, embedding map and retrieval grid."""
    try:
        from keras_ssl import plots
    except ImportError:  # pragma: no cover
        return []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("keras-ssl: matplotlib is not installed, no figures (pip install keras-ssl[plots]).")
        return []
    from keras_ssl import evaluation

    written = []
    curves = {k: v for k, v in record.items() if isinstance(v, list)}
    if curves:
        written.append(plots.plot_history(curves, os.path.join(run_dir, "history.png")))
    (x_train, y_train), (x_test, y_test) = train, test
    if views is not None:
        images = x_train[:8].astype("float32") / (255.0 if x_train.dtype == "uint8" else 1.0)
        made = views(images, training=True)
        written.append(plots.plot_views(images, made, os.path.join(run_dir, "views.png")))
    n = min(2000, len(x_test))
    f_test = evaluation.embed(encoder, x_test[:n])
    written.append(plots.plot_embedding(
        f_test, None if y_test is None else y_test[:n], os.path.join(run_dir, "embedding.png")))
    f_train = evaluation.embed(encoder, x_train[:n])
    _, idx = evaluation.nearest_neighbors(f_test[:8], f_train, k=8)
    written.append(plots.plot_retrieval(x_test[:8], x_train[:n], idx, os.path.join(run_dir, "retrieval.png")))
    print("figures: " + ", ".join(os.path.basename(p) for p in written))
    return written


def _load_data(name, data_dir, limit=None):
    from keras_ssl import data

    try:
        (x_train, y_train), (x_test, y_test) = data.load(name, data_dir=data_dir)
    except ValueError as e:
        raise SystemExit(f"keras-ssl: {e}")
    if limit:
        x_train, y_train = x_train[:limit], (None if y_train is None else y_train[:limit])
    return (x_train, y_train), (x_test, y_test)


def _load_model(path, default_name):
    import keras

    import keras_ssl  # noqa: F401  (registers our layers and models)

    if os.path.isdir(path):
        path = os.path.join(path, default_name)
    if not os.path.isfile(path):
        raise SystemExit(f"keras-ssl: no such file: {path}")
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # corrupt or foreign file: say which file
        raise SystemExit(f"keras-ssl: could not load {path} as a Keras model: {e}")


def evaluate(args):
    """Runs `keras-ssl evaluate`: kNN, linear probe or fine-tuning of an encoder."""
    from keras_ssl import evaluation

    encoder = _load_model(args.encoder, "encoder.keras")
    (x_train, y_train), (x_test, y_test) = _load_data(args.data, args.data_dir, args.limit)
    if y_train is None or y_test is None:
        raise SystemExit(f"keras-ssl: {args.data} has no labels to evaluate with.")
    if args.protocol == "knn":
        f_train, f_test = evaluation.embed(encoder, x_train), evaluation.embed(encoder, x_test)
        result = evaluation.knn_accuracy(f_train, y_train, f_test, y_test, k=args.k, temperature=args.temperature)
    elif args.protocol == "linear":
        result = evaluation.linear_probe(
            encoder, x_train, y_train, x_test, y_test, epochs=args.epochs or 100,
            batch_size=args.batch_size or 256, verbose=0)
    else:
        result = evaluation.fine_tune(
            encoder, x_train, y_train, x_test, y_test, epochs=args.epochs or 10,
            batch_size=args.batch_size or 64, label_fraction=args.label_fraction, verbose=2)
    result = {k: float(v) for k, v in result.items()}
    print(f"{args.protocol} on {args.data}: " + ", ".join(f"{k}={v:.4f}" for k, v in result.items()))
    if args.output:
        _write_json(args.output, dict(result, protocol=args.protocol, data=args.data, encoder=args.encoder))
    return 0


def export(args):
    """Runs `keras-ssl export`: writes the bare encoder of a whole saved model."""
    if os.path.exists(args.output) and not args.overwrite:
        raise SystemExit(f"keras-ssl: {args.output} exists; pass --overwrite to replace it.")
    model = _load_model(args.model, "model.keras")
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise SystemExit(f"keras-ssl: {args.model} is not a keras_ssl model (it has no encoder).")
    _save_atomic(encoder, args.output)
    print(f"wrote {args.output}")
    return 0


def plot(args):
    """Runs `keras-ssl plot RUN_DIR`: the figures of a pretraining run."""
    path = os.path.join(args.run, "history.json")
    if not os.path.isfile(path):
        raise SystemExit(f"keras-ssl: {path} not found: is {args.run} a pretrain run directory?")
    with open(path) as f:
        record = json.load(f)
    encoder = _load_model(args.run, "encoder.keras")
    train, test = _load_data(record.get("data", "digits"), args.data_dir, record.get("limit"))
    _write_plots(args.run, record, encoder, train, test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
