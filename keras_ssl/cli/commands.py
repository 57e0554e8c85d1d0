"""`keras-ssl evaluate`, `export` and `plot`, the loading of saved models, and a run's figures."""

import json
import os

import keras

from keras_ssl import backbones, evaluation, plots, rundir
from keras_ssl.cli.rundata import (
    _check_encoder_takes,
    _data_spec,
    _is_stream,
    _open_data,
    _read_run_spec,
)
from keras_ssl.data import to_unit_float
from keras_ssl.engine.contract import encoder_to_evaluate


def evaluate(args):
    """Runs `keras-ssl evaluate`: kNN, linear probe or fine-tuning of a saved encoder.

    Args:
        args: the Namespace of `build_parser()` for the `evaluate` command.

    Returns:
        0; the scores are printed, and written to `args.output` when given.

    Example:
        >>> from keras_ssl.cli import build_parser, evaluate
        >>> keras_ssl.backbones.tiny_encoder((32, 32, 1), width=8).save("encoder.keras")  # or a run directory
        >>> args = build_parser().parse_args(
        ...     ["evaluate", "encoder.keras", "--data", "digits", "--limit", "256", "--protocol", "linear",
        ...      "--epochs", "5"]
        ... )
        >>> evaluate(args)
        linear on digits: top1=..., train_top1=...
        0
    """
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
            encoder,
            x_train,
            y_train,
            x_test,
            y_test,
            epochs=args.epochs or 100,
            batch_size=args.batch_size or 256,
            value_range=value_range,
            verbose=0,
        )
    else:
        result = evaluation.fine_tune(
            encoder,
            x_train,
            y_train,
            x_test,
            y_test,
            epochs=args.epochs or 10,
            batch_size=args.batch_size or 64,
            label_fraction=args.label_fraction,
            value_range=value_range,
            verbose=2,
        )
    result = {k: float(v) for k, v in result.items()}
    print(f"{args.protocol} on {args.data}: " + ", ".join(f"{k}={v:.4f}" for k, v in result.items()))
    if args.output:
        rundir.write_json(args.output, dict(result, protocol=args.protocol, data=args.data, encoder=args.encoder))
    return 0


def export(args):
    """Runs `keras-ssl export`: writes the bare encoder of a whole saved model, in Keras's layers only.

    Args:
        args: the Namespace of `build_parser()` for the `export` command.

    Returns:
        0, once `args.output` is written (it loads without keras_ssl).

    Example:
        >>> from keras_ssl.cli import build_parser, export
        >>> model = keras_ssl.SimCLR(keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8))
        >>> model.build()  # fit builds it too
        >>> model.save("model.keras")  # a whole SSL model, as pretrain writes it (or its run directory)
        >>> export(build_parser().parse_args(["export", "model.keras", "--output", "exported.keras"]))
        wrote exported.keras
        0
        >>> keras.saving.load_model("exported.keras").output_shape
        (None, 32)
    """
    if not args.output.endswith(".keras"):
        raise SystemExit(
            f"keras-ssl: --output must end in .keras (Keras picks the format by suffix), got {args.output}."
        )
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
    # The encoder the paper evaluates (DINO's teacher), as `pretrain` writes it to encoder.keras.
    encoder = encoder_to_evaluate(model)
    if encoder is None:
        raise SystemExit(f"keras-ssl: {args.model} is not a keras_ssl model (it has no encoder).")
    rundir.save_model(backbones.plain_keras(encoder), args.output)
    print(f"wrote {args.output}")
    return 0


def plot(args):
    """Runs `keras-ssl plot RUN_DIR`: draws again the figures of a pretraining run.

    Args:
        args: the Namespace of `build_parser()` for the `plot` command.

    Returns:
        0; the PNG files are written in `args.run`.

    Example:
        >>> from keras_ssl.cli import build_parser, plot
        >>> os.makedirs("runs/demo")  # what pretrain writes, here by hand: the encoder and history.json
        >>> keras_ssl.backbones.tiny_encoder((32, 32, 1), width=8).save("runs/demo/encoder.keras")
        >>> keras_ssl.rundir.write_json("runs/demo/history.json", {"loss": [5.1, 4.2], "data": "digits", "limit": 64})
        >>> plot(build_parser().parse_args(["plot", "runs/demo"]))
        figures: history.png, embedding.png, retrieval.png
        0
    """
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
    _write_plots(args.run, record, encoder, d.train, d.test, value_range=spec["value_range"], embedding=args.embedding)
    return 0


def _knn(encoder, d, value_range):
    """Weighted-kNN top-1 of `encoder` on the data's labelled images, or None without labels."""
    (x_train, y_train), (x_test, y_test) = d.train, d.test
    if y_train is None or y_test is None:
        return None
    tr = evaluation.embed(encoder, x_train, value_range=value_range)
    te = evaluation.embed(encoder, x_test, value_range=value_range)
    return evaluation.knn_accuracy(tr, y_train, te, y_test)["top1"]


def _raw_pixel_knn(x_train, y_train, x_test, y_test, value_range, max_side=64):
    """`evaluation.raw_pixel_knn`'s top-1 and a note saying when the images were downsized."""
    if y_train is None or y_test is None or not len(x_test):
        return None, ""
    note = f" (at {max_side} px)" if max(x_train.shape[1:3]) > max_side else ""
    return evaluation.raw_pixel_knn(x_train, y_train, x_test, y_test, value_range, max_side)["top1"], note


def _load_model(path, default_name):
    """The Keras model in `path` (or in `path/default_name` for a run directory); a one-line error if none.

    `import keras_ssl` has registered every keras_ssl class, so whole SSL models load too.
    """
    if os.path.isdir(path):
        path = os.path.join(path, default_name)
    if not os.path.isfile(path):
        raise SystemExit(f"keras-ssl: no such file: {path}")
    rundir.check_complete(path)
    try:
        return keras.saving.load_model(path)
    except Exception as e:
        raise SystemExit(f"keras-ssl: could not load {path} as a Keras model: {e}")


def _have_matplotlib():
    """Whether matplotlib imports (figures need it); when not, prints how to install it."""
    try:
        import matplotlib  # noqa: F401  (optional: pip install keras-ssl[plots])
    except ImportError:
        print("keras-ssl: matplotlib is not installed, no figures (pip install keras-ssl[plots]).")
        return False
    return True


def _write_plots(run_dir, record, encoder, train, test, views=None, value_range=None, embedding="auto"):
    """Training curves, augmented views, embedding map (`embedding`: a `plots.EMBEDDINGS` name) and retrieval grid."""
    if not _have_matplotlib():
        return []
    written = []
    if any(isinstance(v, list) and k not in plots.RUN_SETTINGS for k, v in record.items()):
        # the same weighted kNN on the same images as knn_top1: what training must beat
        baselines = {"raw pixels (kNN)": record.get("knn_raw_pixels"), "random init (kNN)": record.get("knn_before")}
        written.append(plots.plot_history(record, os.path.join(run_dir, "history.png"), baselines=baselines))
    (x_train, _), (x_test, y_test) = train, test
    if views is not None:
        images = to_unit_float(x_train[:8], value_range)
        made = views(images, training=True)
        written.append(plots.plot_views(images, made, os.path.join(run_dir, "views.png")))
    n = min(2000, len(x_test))
    f_test = evaluation.embed(encoder, x_test[:n], value_range=value_range)
    written.append(
        plots.plot_embedding(
            f_test, None if y_test is None else y_test[:n], os.path.join(run_dir, "embedding.png"), method=embedding
        )
    )
    f_train = evaluation.embed(encoder, x_train[:n], value_range=value_range)
    _, idx = evaluation.nearest_neighbors(f_test[:8], f_train, k=8)
    if value_range is not None:
        x_train, x_test = (to_unit_float(x, value_range) for x in (x_train[:n], x_test[:8]))
    written.append(plots.plot_retrieval(x_test[:8], x_train[:n], idx, os.path.join(run_dir, "retrieval.png")))
    print("figures: " + ", ".join(os.path.basename(p) for p in written))
    return written
