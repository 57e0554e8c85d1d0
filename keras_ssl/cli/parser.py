"""The flags of `keras-ssl`: its sub-commands, their options and the checks of their values."""

import argparse

from keras_ssl.methods import METHODS

# The --method choices, in the order of `methods.METHODS`.
METHOD_NAMES = tuple(METHODS)
# Digit data: flips change the class and small crops lose the digit (see `pretraining._method_options`).
DIGITS = ("digits", "scattered_digits", "mnist")
# The demo: chosen so that on 2 cores it trains in about 90 s (TensorFlow,
# PyTorch) and the trained encoder beats raw pixels under the same kNN.
DEMO = (
    "pretrain",
    "--data",
    "scattered_digits",
    "--epochs",
    "20",
    "--batch-size",
    "64",
    "--learning-rate",
    "3e-3",
    "--crop-scale",
    "0.5",
    "--knn-every",
    "5",
)


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
                f"must be in {left}{'-inf' if low is None else low}, {'inf' if high is None else high}], got {text}"
            )
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
        if (
            action.default is None
            or action.default is False
            or action.default == argparse.SUPPRESS
            or "default" in text
        ):
            return text
        return f"{text} (default: %(default)s)"


def build_parser():
    """The argument parser of `keras-ssl`: its sub-commands and their options.

    Returns:
        An `argparse.ArgumentParser`; `parse_args` gives a Namespace whose
        `command` is "pretrain", "evaluate", "export", "plot" or None.

    Example:
        >>> from keras_ssl.cli import build_parser
        >>> args = build_parser().parse_args(["pretrain", "--epochs", "2", "--output", "runs/x"])
        >>> args.command, args.epochs, args.method, args.output
        ('pretrain', 2, 'simclr', 'runs/x')
    """
    parser = argparse.ArgumentParser(
        prog="keras-ssl",
        formatter_class=_Help,
        description="Self-supervised pretraining and evaluation on TensorFlow, JAX or PyTorch "
        "(pick with KERAS_BACKEND). With no arguments: a two-minute demo.",
    )
    sub = parser.add_subparsers(dest="command")
    _add_pretrain(sub.add_parser("pretrain", help="train an encoder without labels", formatter_class=_Help))
    _add_evaluate(
        sub.add_parser("evaluate", help="evaluate a saved encoder on a labelled dataset", formatter_class=_Help)
    )
    _add_export(
        sub.add_parser(
            "export",
            help="extract the encoder of a saved SSL model, as plain Keras (loads without keras_ssl)",
            formatter_class=_Help,
        )
    )
    _add_plot(
        sub.add_parser("plot", help="draw a run's figures (curves, embedding map, retrieval)", formatter_class=_Help)
    )
    return parser


def _add_pretrain(p):
    p.add_argument(
        "--method",
        default="simclr",
        choices=METHOD_NAMES,
        metavar="METHOD",
        help="SSL method: " + ", ".join(METHOD_NAMES),
    )
    p.add_argument(
        "--data",
        default="digits",
        help="cifar10 | mnist | fashion_mnist | digits | path.npz (in memory) | image folder "
        "or .txt/.csv file list (streamed) (default: digits)",
    )
    p.add_argument(
        "--image-size",
        type=_number(int, 8),
        default=None,
        help="side of the training images: each image is resized to cover it (aspect kept) and "
        "centre-cropped (default: the data's own size; 96 for folders and file lists)",
    )
    p.add_argument(
        "--value-range",
        default=None,
        help="LOW,HIGH pixel range of float or non-uint8 images, e.g. 0,255 (default: uint8 in 0-255, floats in 0-1)",
    )
    p.add_argument(
        "--steps-per-epoch",
        type=COUNT,
        default=None,
        help="optimizer steps per epoch (default: one pass over the data)",
    )
    p.add_argument(
        "--eval-limit",
        type=COUNT,
        default=2000,
        help="for streamed data: images decoded for kNN and figures, per split (default 2000)",
    )
    p.add_argument("--data-dir", default=None, help="where <name>.npz files are (else $KERAS_SSL_DATA_DIR)")
    p.add_argument(
        "--backbone",
        default=None,
        help="tiny | resnet18 | resnet34 | resnet50 | vit_tiny | vit_small, a keras.applications "
        "model (mobilenet_v3_small, efficientnet_b0, convnext_tiny, resnet50_keras, or any class "
        "name such as ResNet50), or hub:<keras-hub preset> (default: the method's, tiny; vit_tiny "
        "for MAE)",
    )
    p.add_argument(
        "--weights", default=None, help="weights file for a keras.applications --backbone (default: random init)"
    )
    p.add_argument(
        "--width", type=_number(float, 0.01, 16), default=1.0, help="width multiplier of keras_ssl's conv backbones"
    )
    p.add_argument("--epochs", type=COUNT, default=10, help="passes over the data")
    p.add_argument("--batch-size", type=COUNT, default=128, help="images per step")
    p.add_argument("--learning-rate", type=POSITIVE, default=2e-3, help="Adam's learning rate")
    p.add_argument("--temperature", type=POSITIVE, default=None, help="loss temperature (default: the method's)")
    p.add_argument(
        "--crop-scale",
        type=FRACTION,
        default=None,
        help="smallest crop area fraction (default: the method's; 0.3 for digit data)",
    )
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (default for digit data)")
    p.add_argument(
        "--limit",
        type=COUNT,
        default=None,
        help="use only the first N training images (streamed data: N random ones; default: all)",
    )
    p.add_argument("--seed", type=_number(int, 0), default=0, help="seed of weights, views and data order")
    p.add_argument("--output", default="runs/demo", help="run directory")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --output (and a checkpoint left by a different command)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=COUNT,
        default=None,
        metavar="STEPS",
        help="also checkpoint every STEPS steps (default: at each epoch end only); rerunning the "
        "same command after a kill resumes from the last checkpoint",
    )
    p.add_argument(
        "--divergence",
        type=_number(float, 1, low_open=True),
        default=None,
        metavar="FACTOR",
        help="stop when the loss grows FACTOR times its first epoch's size, or the weight norm "
        "FACTOR times between checks, e.g. 100 (default: off; NaN, Inf and weights above 1e12 "
        "always stop)",
    )
    p.add_argument(
        "--no-resume", action="store_true", help="start over even if --output holds a checkpoint of this command"
    )
    p.add_argument(
        "--verbose", type=_number(int, 0, 2), default=None, help="Keras fit verbosity (default: progress bar)"
    )
    p.add_argument(
        "--knn-every",
        type=_number(int, 0),
        default=None,
        help="kNN accuracy every N epochs into the history (default 1, or 5 above 20k images; 0: off)",
    )
    p.add_argument("--no-plots", action="store_true", help="do not write the run's PNG figures")


def _add_evaluate(e):
    e.add_argument("encoder", help="encoder .keras file (or a run directory holding encoder.keras)")
    e.add_argument("--data", default=None, help="dataset, as for pretrain (default: the run's own data, else digits)")
    e.add_argument("--data-dir", default=None, help="where <name>.npz files are (else $KERAS_SSL_DATA_DIR)")
    e.add_argument("--image-size", type=_number(int, 8), default=None, help="as for pretrain (default: the run's)")
    e.add_argument("--value-range", default=None, help="as for pretrain (default: the run's)")
    e.add_argument(
        "--protocol",
        default="knn",
        choices=["knn", "linear", "finetune"],
        help="weighted kNN, linear probe on frozen features, or fine-tuning",
    )
    e.add_argument("--k", type=COUNT, default=200, help="kNN neighbours")
    e.add_argument("--temperature", type=POSITIVE, default=0.1, help="kNN vote temperature")
    e.add_argument("--epochs", type=COUNT, default=None, help="default: 100 for linear, 10 for finetune")
    e.add_argument("--batch-size", type=COUNT, default=None, help="default: 256 for linear, 64 for finetune")
    e.add_argument("--label-fraction", type=FRACTION, default=1.0, help="finetune on this share of labels")
    e.add_argument(
        "--limit",
        type=COUNT,
        default=None,
        help="use only the first N training images (streamed data: N random images of each "
        "split; default: all, 10000 for streamed data)",
    )
    e.add_argument("--output", default=None, help="also write the result to this JSON file")


def _add_export(x):
    x.add_argument("model", help="whole-model .keras file (or a run directory holding model.keras)")
    x.add_argument("--output", required=True, help="encoder .keras file to write")
    x.add_argument("--overwrite", action="store_true", help="replace an existing --output")


def _add_plot(g):
    g.add_argument("run", help="run directory written by pretrain")
    g.add_argument("--data", default=None, help="dataset (default: the run's own)")
    g.add_argument("--data-dir", default=None, help="where <name>.npz files are (else $KERAS_SSL_DATA_DIR)")
