"""The flags of `keras-ssl`: its sub-commands, their options and the checks of their values."""

import argparse

from keras_ssl.methods import METHODS
from keras_ssl.plots import EMBEDDINGS, embedding_method

# The --method choices, in the order of `methods.METHODS`.
METHOD_NAMES = tuple(METHODS)
# Digit data: flips change the class and small crops lose the digit (see `building._method_options`).
DIGITS = ("digits", "scattered_digits", "mnist")
# The demo: chosen so that on 2 cores it trains in about 90 s (TensorFlow,
# PyTorch) and the trained encoder beats raw pixels under the same kNN. Crops of
# at least 60 % of the canvas: the smallest scale at which all but 1 view in 1000
# holds a fifth of its scattered digit (at 30 %, the digit default, 3 % do not;
# tests/test_plots.py), with the trained kNN of 0.7's (docs/benchmarks.md).
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
    "0.6",
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
    p.add_argument("--learning-rate", type=POSITIVE, default=2e-3, help="Adam's learning rate (--recipe cpu)")
    p.add_argument(
        "--recipe",
        choices=["cpu", "paper"],
        default="cpu",
        help="optimizer: cpu = constant Adam at --learning-rate (quick on a CPU); paper = the method's paper "
        "recipe (keras_ssl.recipes: its optimizer and weight decay in PyTorch's terms, rate scaled to "
        "--batch-size, warm-up, cosine over --epochs)",
    )
    p.add_argument("--temperature", type=POSITIVE, default=None, help="loss temperature (default: the method's)")
    p.add_argument(
        "--crop-scale",
        type=FRACTION,
        default=None,
        help="smallest crop area fraction (default: the method's; 0.3 for digit data)",
    )
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (default for digit data)")
    p.add_argument(
        "--local-crops",
        type=COUNT,
        default=None,
        metavar="N",
        help="N local crops of half the side per image, for the methods with local crops: the multi-crop "
        "ones (DINO, SwAV, MSN, DeepCluster v2, iBOT, DINOv2; default 4) and ReSSL (default none)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="set the method's constructor argument NAME (repeatable), e.g. --method mmcr --option momentum=0.99; "
        "VALUE is a Python literal (4096, 0.99, True, None, (0.4, 1.0)), else text",
    )
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
        help="stop when the loss grows FACTOR times its first epoch's mean, or the weight norm FACTOR "
        "times from one checkpoint to the next (the first compared with the starting weights), e.g. 100 "
        "(default: off; NaN, Inf, weights above 1e12 and optimizer state above 1e30 always stop)",
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
    p.add_argument(
        "--num-processes",
        type=COUNT,
        default=None,
        metavar="N",
        help="start N processes on this machine that train together, each on its share of every "
        "--batch-size batch (default: one, or those an outside launcher such as torchrun started; "
        "see docs/scaling.md)",
    )
    _add_embedding(p)


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
    _add_embedding(g)


def _embedding(text):
    """--embedding: a map that `plots.embedding_method` knows and that is installed, checked before any work."""
    try:
        embedding_method(text)
    except (ValueError, ImportError) as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _add_embedding(p):
    p.add_argument(
        "--embedding",
        type=_embedding,
        default="auto",
        metavar="{" + ",".join(EMBEDDINGS) + "}",
        help="2-D map of embedding.png: pca, tsne (scikit-learn, on 2000 random points at most), umap "
        "(pip install umap-learn, 2000 points) or auto, the best installed: umap, else tsne",
    )


def cli_error_message(error, command):
    """A library error's message as the CLI reports it: the argument it suggests spelled as a flag.

    An error that one argument fixes carries it (`data.FixableError`):
    `argument` (the Python name), `value`, and `template`, the message with
    `{fix}` where the suggestion goes. Under `command` the suggestion is
    that command's flag, `value_range=(0, 255)` becoming `--value-range
    0,255`; an argument the command has no flag for keeps its Python form.

    Args:
        error: the exception raised under the command.
        command: the sub-command ("pretrain", "evaluate"...).

    Returns:
        The message, or None when `error` carries no argument.

    Example:
        >>> from keras_ssl.cli.parser import cli_error_message
        >>> error = ValueError("values up to 255? Pass value_range=(0, 255).")
        >>> error.template, error.argument, error.value = "values up to 255? Pass {fix}.", "value_range", (0, 255)
        >>> cli_error_message(error, "pretrain")
        'values up to 255? Pass --value-range 0,255.'
        >>> cli_error_message(ValueError("no argument fixes this"), "pretrain") is None
        True
    """
    template, argument = getattr(error, "template", None), getattr(error, "argument", None)
    if not isinstance(template, str) or not isinstance(argument, str):
        return None
    value = getattr(error, "value", None)
    flag = _flags(command).get(argument)
    if flag is None:
        fix = f"{argument}={value!r}"
    elif value is True or value is None:
        fix = flag
    else:
        values = value if isinstance(value, (list, tuple)) else [value]
        fix = f"{flag} " + ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
    return template.replace("{fix}", fix)


def _flags(command):
    """`{argument name: its --flag}` of a sub-command's options, recorded as its parser adds them."""
    flags = {}

    class Recorder:
        def add_argument(self, *names, **options):
            long = [n for n in names if n.startswith("--")]
            if long:  # argparse's dest: the first long flag, dashes as underscores
                flags[options.get("dest") or long[0][2:].replace("-", "_")] = long[0]

    _ADD_OPTIONS.get(command, lambda p: None)(Recorder())
    return flags


_ADD_OPTIONS = {"pretrain": _add_pretrain, "evaluate": _add_evaluate, "export": _add_export, "plot": _add_plot}
