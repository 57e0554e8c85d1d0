"""The `keras-ssl` command line: pretrain, evaluate, export, plot.

With no arguments, `keras-ssl` runs a two-minute SimCLR demo on
scikit-learn's digits scattered at random sizes and positions (no download,
`data.scattered_digits`) and compares kNN accuracy on raw pixels, on the
random-init encoder and on the trained one.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from keras_ssl import rundir


def _methods():
    from keras_ssl.methods import METHODS

    return METHODS


# The names of `methods.METHODS`, here so that --help imports no Keras
# (a test checks they agree).
METHOD_NAMES = ("simclr", "moco", "moco_v3", "byol", "nnclr", "simsiam", "barlow_twins", "vicreg", "swav",
                "dino", "mae")


def _number(kind, low=None, high=None, low_open=False):
    """An argparse type: `kind` (int or float) within [low, high] (low excluded when `low_open`)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high) or value != value:
            left = "(" if low_open else "["
            raise argparse.ArgumentTypeError(
                f"must be in {left}{'-inf' if low is None else low}, {'inf' if high is None else high}], "
                f"got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


COUNT = _number(int, 1)  # epochs, batch sizes, limits: at least one
POSITIVE = _number(float, 0, low_open=True)
FRACTION = _number(float, 0, 1, low_open=True)


class _Help(argparse.HelpFormatter):
    """Shows each option's default, unless its help already says it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def build_parser():
    """The argument parser of `keras-ssl` (sub-commands and their options)."""
    parser = argparse.ArgumentParser(
        prog="keras-ssl", formatter_class=_Help,
        description="Self-supervised pretraining and evaluation on TensorFlow, JAX or PyTorch "
        "(pick with KERAS_BACKEND). With no arguments: a two-minute demo.",
    )
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("pretrain", help="train an encoder without labels", formatter_class=_Help)
    p.add_argument("--method", default="simclr", choices=METHOD_NAMES, metavar="METHOD",
                   help="SSL method: " + ", ".join(METHOD_NAMES))
    p.add_argument("--data", default="digits",
                   help="cifar10 | mnist | fashion_mnist | digits | path.npz (in memory) | image folder "
                   "or .txt/.csv file list (streamed) (default: digits)")
    p.add_argument("--image-size", type=_number(int, 8), default=None,
                   help="side of the training images: each image is resized to cover it (aspect kept) and "
                   "centre-cropped (default: the data's own size; 96 for folders and file lists)")
    p.add_argument("--value-range", default=None,
                   help="LOW,HIGH pixel range of float or non-uint8 images, e.g. 0,255 (default: uint8 "
                   "in 0-255, floats in 0-1)")
    p.add_argument("--steps-per-epoch", type=COUNT, default=None,
                   help="optimizer steps per epoch (default: one pass over the data)")
    p.add_argument("--eval-limit", type=COUNT, default=2000,
                   help="for streamed data: images decoded for kNN and figures, per split (default 2000)")
    p.add_argument("--data-dir", default=None, help="where <name>.npz files are (else $KERAS_SSL_DATA_DIR)")
    p.add_argument("--backbone", default=None,
                   help="tiny | resnet18 | resnet34 | resnet50 | vit_tiny | vit_small, a keras.applications "
                   "model (mobilenet_v3_small, efficientnet_b0, convnext_tiny, resnet50_keras, or any class "
                   "name such as ResNet50), or hub:<keras-hub preset> (default: the method's, tiny; vit_tiny "
                   "for MAE)")
    p.add_argument("--weights", default=None,
                   help="weights file for a keras.applications --backbone (default: random init)")
    p.add_argument("--width", type=_number(float, 0.01, 16), default=1.0, help="width multiplier of keras_ssl's conv backbones")
    p.add_argument("--epochs", type=COUNT, default=10, help="passes over the data")
    p.add_argument("--batch-size", type=COUNT, default=128, help="images per step")
    p.add_argument("--learning-rate", type=POSITIVE, default=2e-3, help="Adam's learning rate")
    p.add_argument("--temperature", type=POSITIVE, default=None, help="loss temperature (default: the method's)")
    p.add_argument("--crop-scale", type=FRACTION, default=None,
                   help="smallest crop area fraction (default: the method's; 0.3 for digit data)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (default for digit data)")
    p.add_argument("--limit", type=COUNT, default=None,
                   help="use only the first N training images (streamed data: N random ones; default: all)")
    p.add_argument("--seed", type=_number(int, 0), default=0, help="seed of weights, views and data order")
    p.add_argument("--output", default="runs/demo", help="run directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --output (and a checkpoint left by a different command)")
    p.add_argument("--checkpoint-every", type=COUNT, default=None, metavar="STEPS",
                   help="also checkpoint every STEPS steps (default: at each epoch end only); rerunning the "
                   "same command after a kill resumes from the last checkpoint")
    p.add_argument("--divergence", type=_number(float, 1, low_open=True), default=None, metavar="FACTOR",
                   help="stop when the loss grows FACTOR times its first epoch's size, or the weight norm "
                   "FACTOR times between checks, e.g. 100 (default: off; NaN, Inf and weights above 1e12 "
                   "always stop)")
    p.add_argument("--no-resume", action="store_true",
                   help="start over even if --output holds a checkpoint of this command")
    p.add_argument("--verbose", type=_number(int, 0, 2), default=None, help="Keras fit verbosity (default: progress bar)")
    p.add_argument("--knn-every", type=_number(int, 0), default=None,
                   help="kNN accuracy every N epochs into the history (default 1, or 5 above 20k images; 0: off)")
    p.add_argument("--no-plots", action="store_true", help="do not write the run's PNG figures")

    e = sub.add_parser("evaluate", help="evaluate a saved encoder on a labelled dataset", formatter_class=_Help)
    e.add_argument("encoder", help="encoder .keras file (or a run directory holding encoder.keras)")
    e.add_argument("--data", default=None,
                   help="dataset, as for pretrain (default: the run's own data, else digits)")
    e.add_argument("--data-dir", default=None, help="where <name>.npz files are (else $KERAS_SSL_DATA_DIR)")
    e.add_argument("--image-size", type=_number(int, 8), default=None, help="as for pretrain (default: the run's)")
    e.add_argument("--value-range", default=None, help="as for pretrain (default: the run's)")
    e.add_argument("--protocol", default="knn", choices=["knn", "linear", "finetune"],
                   help="weighted kNN, linear probe on frozen features, or fine-tuning")
    e.add_argument("--k", type=COUNT, default=200, help="kNN neighbours")
    e.add_argument("--temperature", type=POSITIVE, default=0.1, help="kNN vote temperature")
    e.add_argument("--epochs", type=COUNT, default=None, help="default: 100 for linear, 10 for finetune")
    e.add_argument("--batch-size", type=COUNT, default=None, help="default: 256 for linear, 64 for finetune")
    e.add_argument("--label-fraction", type=FRACTION, default=1.0, help="finetune on this share of labels")
    e.add_argument("--limit", type=COUNT, default=None,
                   help="use only the first N training images (streamed data: N random images of each "
                   "split; default: all, 10000 for streamed data)")
    e.add_argument("--output", default=None, help="also write the result to this JSON file")

    x = sub.add_parser("export", help="extract the encoder of a saved SSL model, as plain Keras (loads without keras_ssl)",
                       formatter_class=_Help)
    x.add_argument("model", help="whole-model .keras file (or a run directory holding model.keras)")
    x.add_argument("--output", required=True, help="encoder .keras file to write")
    x.add_argument("--overwrite", action="store_true", help="replace an existing --output")

    g = sub.add_parser("plot", help="draw a run's figures (curves, embedding map, retrieval)",
                       formatter_class=_Help)
    g.add_argument("run", help="run directory written by pretrain")
    g.add_argument("--data", default=None, help="dataset (default: the run's own)")
    g.add_argument("--data-dir", default=None, help="where <name>.npz files are (else $KERAS_SSL_DATA_DIR)")
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
        argv = list(DEMO)
        print("keras-ssl: no command given, running the two-minute SimCLR demo on scattered digits "
              "(see `keras-ssl --help`).")
    args = build_parser().parse_args(argv)
    commands = {"pretrain": pretrain, "evaluate": evaluate, "export": export, "plot": plot}
    if args.command not in commands:
        build_parser().print_help()
        return 2
    return commands[args.command](args)


def _build_encoder(name, input_shape, width, image_size, weights=None):
    """The named backbone (`backbones.get`); `input_shape` may hold None for any spatial size."""
    from keras_ssl import backbones

    if name.startswith(("vit_", "hub:")) and None in input_shape:
        input_shape = (image_size, image_size, input_shape[-1])
    try:
        return backbones.get(name, input_shape, width=width, weights=weights)
    except ValueError as e:
        raise SystemExit(f"keras-ssl: --backbone: {e}") from None


DIGITS = ("digits", "scattered_digits", "mnist")
# The demo: chosen so that on 2 cores it trains in about 90 s (TensorFlow,
# PyTorch) and the trained encoder beats raw pixels under the same kNN.
DEMO = ("pretrain", "--data", "scattered_digits", "--epochs", "20", "--batch-size", "64",
        "--learning-rate", "3e-3", "--crop-scale", "0.5", "--knn-every", "5")


def _method_options(args, method, image_shape):
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
        image_shape[0], channels=image_shape[-1], min_crop_scale=scale,
        horizontal_flip=not (args.no_flip or digits), seed=args.seed + 1,
    )
    return options


def pretrain(args):
    """Runs `keras-ssl pretrain`: data, encoder, method, fit, kNN, files."""
    methods = _methods()
    if args.method not in methods:
        raise SystemExit(f"keras-ssl: unknown --method {args.method!r}; choose from {sorted(methods)}.")
    encoder_path = os.path.join(args.output, "encoder.keras")
    created = not os.path.exists(args.output)
    rundir.check_writable_dir(args.output)
    try:
        with rundir.RunLock(args.output):
            resume = _resume_plan(args, encoder_path)
            return _pretrain(args, methods, encoder_path, resume)
    except BaseException:
        if created and not os.listdir(args.output):  # failed before writing anything: leave no trace
            os.rmdir(args.output)
        raise


CHECKPOINT = "checkpoint"
# Flags that do not change what is trained: a checkpoint resumes across them.
_NOT_THE_RUN = ("command", "output", "overwrite", "verbose", "no_plots", "no_resume", "checkpoint_every",
                "knn_every", "eval_limit", "divergence")


def _command(args):
    """The flags that define a run, as recorded next to its checkpoint."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_THE_RUN}


def _saved_command(args):
    path = os.path.join(args.output, CHECKPOINT, "command.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _same_command_checkpoint(args):
    """Whether --output holds an interrupted run of this very command."""
    from keras_ssl.checkpoints import list_checkpoints

    return (not args.no_resume and bool(list_checkpoints(os.path.join(args.output, CHECKPOINT)))
            and _saved_command(args) == json.loads(json.dumps(_command(args))))


def _resume_plan(args, encoder_path):
    """The checkpoint state to resume from (None: start over), after clearing one that does not apply.

    An interrupted run of this command resumes; one of another command, or
    a finished run, is replaced only with --overwrite.
    """
    from keras_ssl.checkpoints import list_checkpoints, read_state

    folder = os.path.join(args.output, CHECKPOINT)
    if _same_command_checkpoint(args):
        return read_state(list_checkpoints(folder)[0])
    saved = _saved_command(args) or {}
    if list_checkpoints(folder) and not args.no_resume and not args.overwrite:
        now = json.loads(json.dumps(_command(args)))
        changed = [f"--{k.replace('_', '-')} {saved.get(k)} there, {now.get(k)} here"
                   for k in sorted(set(now) | set(saved)) if saved.get(k) != now.get(k)]
        raise SystemExit(f"keras-ssl: {folder} holds the checkpoint of an interrupted run of another command "
                         f"({'; '.join(changed) or 'no record of it'}). Rerun that command to resume it, or "
                         "pass --overwrite to start over.")
    if os.path.exists(encoder_path) and not args.overwrite:
        raise SystemExit(f"keras-ssl: {encoder_path} exists; pass --overwrite to replace it.")
    rundir.remove_dir(folder)
    return None


def _pretrain(args, methods, encoder_path, resume=None):

    import keras

    from keras_ssl import distribute, evaluation
    from keras_ssl.checkpoints import BackupAndRestore

    keras.utils.set_random_seed(args.seed)
    spec = _data_spec(args)
    d = _open_data(spec, batch_size=args.batch_size, eval_limit=args.eval_limit, training=True)
    (x_train, y_train), (x_test, y_test) = d.train, d.test
    backbone = args.backbone or methods[args.method].default_backbone
    print(f"backend {distribute.backend()} | data {args.data}: {d.size} train images "
          f"{d.shape}{' (streamed)' if d.streamed else ''}, {len(x_test)} test | method {args.method} "
          f"| backbone {backbone}")

    method = methods[args.method]
    image_shape = d.shape
    # Multi-crop methods feed the encoder crops of two sizes.
    encoder_input = (None, None, image_shape[-1]) if method.local_views else image_shape
    encoder = _build_encoder(backbone, encoder_input, args.width, image_shape[0], args.weights)
    model = method(encoder, input_shape=image_shape, seed=args.seed, value_range=spec["value_range"],
                   **_method_options(args, method, image_shape))
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
    value_range = spec["value_range"]

    def knn():
        if y_train is None or y_test is None:
            return None
        tr = evaluation.embed(model.encoder, x_train, value_range=value_range)
        te = evaluation.embed(model.encoder, x_test, value_range=value_range)
        return evaluation.knn_accuracy(tr, y_train, te, y_test)["top1"]

    raw, raw_note = _raw_pixel_knn(x_train, y_train, x_test, y_test, value_range)
    before = knn()
    if before is not None:
        print(f"kNN top-1 of the randomly initialised encoder: {before:.4f}")
    start = time.time()
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    callbacks = []
    every = args.knn_every if args.knn_every is not None else (1 if d.size <= 20000 else 5)
    if every > 0 and y_train is not None and y_test is not None:
        from keras_ssl.callbacks import KNNMonitor

        callbacks.append(KNNMonitor(x_test, y_test, x_train=x_train, y_train=y_train, every=every,
                                    value_range=value_range))
    checkpoint_dir = os.path.join(args.output, CHECKPOINT)
    os.makedirs(checkpoint_dir, exist_ok=True)
    rundir.write_json(os.path.join(checkpoint_dir, "command.json"), _command(args))
    backup = BackupAndRestore(checkpoint_dir, save_freq=args.checkpoint_every or "epoch", delete_checkpoint=False)
    callbacks.append(backup)
    if args.divergence:
        from keras_ssl.callbacks import StopOnNaN

        callbacks.insert(0, StopOnNaN(weights_every=args.checkpoint_every, divergence=args.divergence))
    if resume is not None:
        done = resume["epoch"] >= args.epochs
        print(f"resuming from epoch {min(resume['epoch'] + 1, args.epochs)} of {args.epochs}"
              + (f", after its step {resume['batch']}" if resume["batch"] else "")
              + (" (training was complete; writing the run's files)" if done else "")
              + f" (checkpoint in {checkpoint_dir})")
    model.fit(d.fit, epochs=args.epochs, batch_size=None if d.streamed else args.batch_size,
              steps_per_epoch=args.steps_per_epoch, verbose=verbose, callbacks=callbacks)
    seconds = time.time() - start
    after = knn()
    if after is not None:
        print(f"kNN top-1 after {args.epochs} epochs of {args.method}: {after:.4f} "
              f"(random init {before:.4f}) in {seconds:.0f} s")
        print(f"raw-pixel kNN top-1 {raw:.4f}{raw_note} | random-init encoder {before:.4f} | trained "
              f"{args.method} encoder {after:.4f}  (weighted kNN, k=200, T=0.1, same images)")

    # Every file is staged, then published as one run; the checkpoint goes last, so a kill
    # anywhere before leaves a run to resume (or, while publishing, one to finish).
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    stage = rundir.staging_dir(args.output)
    rundir.save_model(model.encoder, os.path.join(stage, "encoder.keras"))
    rundir.save_model(model, os.path.join(stage, "model.keras"))
    record = {}
    for logs in backup.epoch_logs:  # every epoch, those before a resume included
        for key, value in logs.items():
            record.setdefault(key, []).append(value)
    record.update(
        knn_raw_pixels=raw, knn_before=before, knn_after=after, seconds=seconds, backend=distribute.backend(),
        method=args.method, data=args.data, epochs=args.epochs, batch_size=args.batch_size,
        limit=args.limit, steps_per_epoch=args.steps_per_epoch, image_size=list(image_shape[:2]),
        run_id=run_id, resumed_from=None if resume is None else [resume["epoch"], resume["batch"]],
    )
    rundir.write_json(os.path.join(stage, "history.json"), record)
    rundir.write_json(os.path.join(stage, DATA_RECORD), spec)
    if not args.no_plots:
        _write_plots(stage, record, model.encoder, (x_train, y_train), (x_test, y_test), model.views, value_range)
    rundir.publish(args.output, run_id)
    rundir.remove_dir(checkpoint_dir)
    print(f"wrote {encoder_path}, model.keras and history.json in {args.output}")
    return 0


def _raw_pixel_knn(x_train, y_train, x_test, y_test, value_range, max_side=64):
    """`evaluation.raw_pixel_knn`'s top-1 and a note saying when the images were downsized."""
    if y_train is None or y_test is None or not len(x_test):
        return None, ""
    from keras_ssl import evaluation

    note = f" (at {max_side} px)" if max(x_train.shape[1:3]) > max_side else ""
    return evaluation.raw_pixel_knn(x_train, y_train, x_test, y_test, value_range, max_side)["top1"], note


def _write_plots(run_dir, record, encoder, train, test, views=None, value_range=None):
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
        from keras_ssl.data import to_unit_float

        images = to_unit_float(x_train[:8], value_range)
        made = views(images, training=True)
        written.append(plots.plot_views(images, made, os.path.join(run_dir, "views.png")))
    n = min(2000, len(x_test))
    f_test = evaluation.embed(encoder, x_test[:n], value_range=value_range)
    written.append(plots.plot_embedding(
        f_test, None if y_test is None else y_test[:n], os.path.join(run_dir, "embedding.png")))
    f_train = evaluation.embed(encoder, x_train[:n], value_range=value_range)
    _, idx = evaluation.nearest_neighbors(f_test[:8], f_train, k=8)
    if value_range is not None:
        x_train, x_test = (to_unit_float(x, value_range) for x in (x_train[:n], x_test[:8]))
    written.append(plots.plot_retrieval(x_test[:8], x_train[:n], idx, os.path.join(run_dir, "retrieval.png")))
    print("figures: " + ", ".join(os.path.basename(p) for p in written))
    return written


DATA_RECORD = "data.json"


def _is_stream(name):
    return os.path.isdir(name) or name.lower().endswith((".txt", ".csv"))


def _value_range(text):
    if text is None or isinstance(text, (list, tuple)):
        return None if text is None else [float(v) for v in text]
    parts = text.replace("(", "").replace(")", "").split(",")
    try:
        low, high = (float(v) for v in parts)
    except ValueError:
        raise SystemExit(f"keras-ssl: --value-range takes LOW,HIGH (e.g. 0,255), got {text!r}.") from None
    from keras_ssl.data import check_value_range

    try:
        return list(check_value_range((low, high)))
    except ValueError as e:
        raise SystemExit(f"keras-ssl: --value-range: {e}") from None


def _data_spec(args, run_spec=None):
    """The data a command uses: its flags, else the run's record (`data.json`), else digits.

    Paths are made absolute, so a run directory names its data wherever the
    command is run from.
    """
    run_spec = run_spec or {}
    name = args.data or run_spec.get("data") or "digits"
    if args.data is not None and (os.path.exists(name) or _is_stream(name)):
        name = os.path.abspath(name)
    data_dir = getattr(args, "data_dir", None)
    data_dir = os.path.abspath(data_dir) if data_dir else run_spec.get("data_dir")
    pick = lambda flag, key: flag if flag is not None else run_spec.get(key)  # noqa: E731
    return {
        "data": name,
        "data_dir": data_dir,
        "image_size": pick(getattr(args, "image_size", None), "image_size"),
        "value_range": _value_range(pick(getattr(args, "value_range", None), "value_range")),
        "limit": pick(getattr(args, "limit", None), "limit"),
        "seed": pick(getattr(args, "seed", None), "seed") or 0,
    }


class _Data:
    """A command's data: what `fit` trains on and labelled arrays for evaluation."""

    def __init__(self, fit, train, test, streamed, size):
        self.fit, self.train, self.test, self.streamed, self.size = fit, train, test, streamed, size
        self.shape = tuple(int(v) for v in train[0].shape[1:])


def _open_data(spec, batch_size=128, eval_limit=None, training=False):
    """Opens `spec`'s data: arrays in memory, or folders and file lists streamed.

    Streamed sources are split (class-stratified, seed 0) into a training
    part and a test part of at most 20 % (1,000 images); `eval_limit`
    random images of each are decoded for kNN and figures, so memory does
    not grow with the data.
    """
    from keras_ssl import data

    name, size, limit = spec["data"], spec.get("image_size"), spec.get("limit")
    try:
        if _is_stream(name):
            make = data.ImageFiles.from_folder if os.path.isdir(name) else data.ImageFiles.from_list
            stream = make(name, image_size=size or 96, batch_size=batch_size, seed=spec.get("seed", 0),
                          shuffle=training)
            train, test = stream, None
            if stream.labels is not None and len(stream.files) >= 20:
                train, test = stream.split(min(0.2, 1000 / len(stream.files)), seed=0)
            if limit:
                train = train.subset(_some(len(train.files), limit, spec.get("seed", 0)))
            n = eval_limit or len(stream.files)
            x_train, y_train = train.subset(_some(len(train.files), n, 0), shuffle=False,
                                            drop_remainder=False).to_arrays()
            x_test, y_test = (x_train[:0], None) if test is None else test.subset(
                _some(len(test.files), n, 0), drop_remainder=False).to_arrays()
            return _Data(train, (x_train, y_train), (x_test, y_test), True, len(train.files))
        (x_train, y_train), (x_test, y_test) = data.load(name, data_dir=spec.get("data_dir"))
    except ValueError as e:
        raise SystemExit(f"keras-ssl: {e}")
    if limit:
        x_train, y_train = x_train[:limit], (None if y_train is None else y_train[:limit])
    if size and tuple(x_train.shape[1:3]) != (size, size):
        x_train, x_test = data.resize_images(x_train, size), data.resize_images(x_test, size)
    return _Data(x_train, (x_train, y_train), (x_test, y_test), False, len(x_train))


def _some(total, count, seed):
    """Sorted indices of `count` random items of `total` (all when fewer)."""
    if count >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:count])


def _read_run_spec(path):
    """The data record of the run `path` (a run directory or a file in one), or {}."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    record = os.path.join(folder, DATA_RECORD)
    if not os.path.isfile(record):
        return {}
    with open(record) as f:
        return json.load(f)


def _check_encoder_takes(encoder, shape, source):
    """A one-line error when the encoder cannot take the data's images."""
    inputs = getattr(encoder, "inputs", None)
    if not inputs:
        return
    wanted = tuple(inputs[0].shape[1:])
    if len(wanted) != 3:
        return
    if wanted[-1] is not None and wanted[-1] != shape[-1]:
        raise SystemExit(
            f"keras-ssl: the encoder takes {wanted[-1]}-channel images but {source} has {shape[-1]}; "
            "pass the --data it was trained on."
        )
    if any(w is not None and w != s for w, s in zip(wanted[:2], shape[:2])):
        raise SystemExit(
            f"keras-ssl: the encoder takes {wanted[0]}x{wanted[1]} images but {source} gives "
            f"{shape[0]}x{shape[1]}; pass --image-size {wanted[0]} (or the --data it was trained on)."
        )


def _load_model(path, default_name):
    import keras

    import keras_ssl

    keras_ssl.import_all()  # registers our layers and models

    if os.path.isdir(path):
        path = os.path.join(path, default_name)
    if not os.path.isfile(path):
        raise SystemExit(f"keras-ssl: no such file: {path}")
    rundir.check_complete(path)
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # corrupt or foreign file: say which file
        raise SystemExit(f"keras-ssl: could not load {path} as a Keras model: {e}")


def evaluate(args):
    """Runs `keras-ssl evaluate`: kNN, linear probe or fine-tuning of an encoder."""
    from keras_ssl import evaluation

    encoder = _load_model(args.encoder, "encoder.keras")
    spec = dict(_data_spec(args, _read_run_spec(args.encoder)), limit=args.limit)
    args.data = os.path.basename(spec["data"]) if _is_stream(spec["data"]) else spec["data"]
    d = _open_data(spec, eval_limit=args.limit or 10000)
    (x_train, y_train), (x_test, y_test) = d.train, d.test
    if y_train is None or y_test is None or not len(x_test):
        raise SystemExit(f"keras-ssl: {args.data} has no labels to evaluate with.")
    _check_encoder_takes(encoder, d.shape, args.data)
    value_range = spec["value_range"]
    if args.protocol == "knn":
        f_train = evaluation.embed(encoder, x_train, value_range=value_range)
        f_test = evaluation.embed(encoder, x_test, value_range=value_range)
        result = evaluation.knn_accuracy(f_train, y_train, f_test, y_test, k=args.k, temperature=args.temperature)
    elif args.protocol == "linear":
        result = evaluation.linear_probe(
            encoder, x_train, y_train, x_test, y_test, epochs=args.epochs or 100,
            batch_size=args.batch_size or 256, value_range=value_range, verbose=0)
    else:
        result = evaluation.fine_tune(
            encoder, x_train, y_train, x_test, y_test, epochs=args.epochs or 10,
            batch_size=args.batch_size or 64, label_fraction=args.label_fraction,
            value_range=value_range, verbose=2)
    result = {k: float(v) for k, v in result.items()}
    print(f"{args.protocol} on {args.data}: " + ", ".join(f"{k}={v:.4f}" for k, v in result.items()))
    if args.output:
        rundir.write_json(args.output, dict(result, protocol=args.protocol, data=args.data, encoder=args.encoder))
    return 0


def export(args):
    """Runs `keras-ssl export`: writes the bare encoder of a whole saved model, in Keras's layers only."""
    if not args.output.endswith(".keras"):
        raise SystemExit(f"keras-ssl: --output must end in .keras (Keras picks the format by suffix), "
                         f"got {args.output}.")
    if os.path.isdir(args.output):
        raise SystemExit(f"keras-ssl: --output {args.output} is a directory; name the .keras file to write.")
    if os.path.exists(args.output) and not args.overwrite:
        raise SystemExit(f"keras-ssl: {args.output} exists; pass --overwrite to replace it.")
    parent = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(parent):
        raise SystemExit(f"keras-ssl: the directory of --output, {parent}, does not exist.")
    if not os.access(parent, os.W_OK):
        raise SystemExit(f"keras-ssl: cannot write to {parent} (read-only or not yours).")
    model = _load_model(args.model, "model.keras")
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise SystemExit(f"keras-ssl: {args.model} is not a keras_ssl model (it has no encoder).")
    from keras_ssl import backbones

    rundir.save_model(backbones.plain_keras(encoder), args.output)
    print(f"wrote {args.output}")
    return 0


def plot(args):
    """Runs `keras-ssl plot RUN_DIR`: the figures of a pretraining run."""
    path = os.path.join(args.run, "history.json")
    if not os.path.isfile(path):
        raise SystemExit(f"keras-ssl: {path} not found: is {args.run} a pretrain run directory?")
    rundir.check_complete(path)
    with open(path) as f:
        record = json.load(f)
    encoder = _load_model(args.run, "encoder.keras")
    run_spec = _read_run_spec(args.run) or {"data": record.get("data", "digits"), "limit": record.get("limit")}
    spec = _data_spec(args, run_spec)
    d = _open_data(spec)
    _check_encoder_takes(encoder, d.shape, spec["data"])
    _write_plots(args.run, record, encoder, d.train, d.test, value_range=spec["value_range"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
