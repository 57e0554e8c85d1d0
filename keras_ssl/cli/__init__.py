"""The `keras-ssl` command line: pretrain, evaluate, export, plot.

With no arguments, `keras-ssl` runs a two-minute SimCLR demo on
scikit-learn's digits scattered at random sizes and positions (no download,
`data.scattered_digits`) and compares kNN accuracy on raw pixels, on the
random-init encoder and on the trained one. `run_pretrain` is the pretrain
command called from Python.

Modules: `parser` (the flags and their checks), `pretraining` (the pretrain
command: resuming, training, publishing the run), `building` (the method and
encoder a command names, with its `--option`s), `launch` (pretrain on many
processes: `--num-processes`, or an outside launcher's), `rundata` (a
command's data and the run's data.json), `commands` (evaluate, export, plot,
figures).
"""

import os
import sys

from keras_ssl.cli.building import _build_encoder
from keras_ssl.cli.commands import evaluate, export, plot
from keras_ssl.cli.parser import DEMO, DIGITS, METHOD_NAMES, build_parser, cli_error_message
from keras_ssl.cli.pretraining import pretrain, run_pretrain

__all__ = [
    "DEMO",
    "DIGITS",
    "METHOD_NAMES",
    "build_parser",
    "cli_error_message",
    "evaluate",
    "export",
    "main",
    "plot",
    "pretrain",
    "run_pretrain",
]

_COMMANDS = {"pretrain": pretrain, "evaluate": evaluate, "export": export, "plot": plot}


def main(argv=None):
    """Entry point of the `keras-ssl` console script.

    Args:
        argv: argument list (defaults to `sys.argv[1:]`); empty runs the demo.

    Returns:
        The exit status: 0 when the command succeeded, 2 when none was given
        (after printing the help). Errors exit through SystemExit with a
        one-line message; a library error that one argument fixes names the
        command's flag (`--value-range 0,255`, see `cli_error_message`).

    Example:
        >>> from keras_ssl.cli import main
        >>> main(["pretrain", "--data", "digits", "--limit", "64", "--epochs", "1", "--batch-size", "16",
        ...       "--knn-every", "0", "--no-plots", "--verbose", "0", "--output", "runs/x"])
        backend ... | data digits: 64 train images (32, 32, 1), 359 test | method simclr | backbone tiny
        kNN top-1 of the randomly initialised encoder: ...
        wrote runs/x/encoder.keras, model.keras and history.json in runs/x
        0
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        argv = list(DEMO)
        print(
            "keras-ssl: no command given, running the two-minute SimCLR demo on scattered digits "
            "(see `keras-ssl --help`)."
        )
    args = build_parser().parse_args(argv)
    if args.command not in _COMMANDS:
        build_parser().print_help()
        return 2
    try:
        return _COMMANDS[args.command](args)
    except Exception as e:
        message = cli_error_message(e, args.command)
        if message is None:
            raise
        raise SystemExit(f"keras-ssl: {message}") from None
