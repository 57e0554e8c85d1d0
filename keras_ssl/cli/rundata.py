"""A command's data: which data (flags, else the run's `data.json`), opened in memory or streamed.

Also the checks between data and an encoder, so that a mismatch is one line
naming the flag to pass.
"""

import json
import os

import numpy as np

from keras_ssl import data

DATA_RECORD = "data.json"  # a run's data, written by pretrain and read by evaluate and plot


def _is_stream(name):
    """Whether `name` is streamed from files: an image folder or a .txt/.csv file list."""
    return os.path.isdir(name) or name.lower().endswith((".txt", ".csv"))


def _value_range(text):
    """--value-range "LOW,HIGH" (or a recorded [low, high]) as [low, high]; None stays None."""
    if text is None or isinstance(text, (list, tuple)):
        return None if text is None else [float(v) for v in text]
    parts = text.replace("(", "").replace(")", "").split(",")
    try:
        low, high = (float(v) for v in parts)
    except ValueError:
        raise SystemExit(f"keras-ssl: --value-range takes LOW,HIGH (e.g. 0,255), got {text!r}.") from None
    try:
        return list(data.check_value_range((low, high)))
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
    pick = lambda flag, key: flag if flag is not None else run_spec.get(key)
    return {
        "data": name,
        "data_dir": data_dir,
        "image_size": pick(getattr(args, "image_size", None), "image_size"),
        "value_range": _value_range(pick(getattr(args, "value_range", None), "value_range")),
        "limit": pick(getattr(args, "limit", None), "limit"),
        "seed": pick(getattr(args, "seed", None), "seed") or 0,
    }


def _read_run_spec(path):
    """The data record of the run `path` (a run directory or a file in one), or {}."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    record = os.path.join(folder, DATA_RECORD)
    if not os.path.isfile(record):
        return {}
    with open(record) as f:
        return json.load(f)


class _Data:
    """A command's data: what `fit` trains on and labelled arrays for evaluation."""

    def __init__(self, fit, train, test, streamed, size):
        self.fit, self.train, self.test, self.streamed, self.size = fit, train, test, streamed, size
        self.shape = tuple(int(v) for v in train[0].shape[1:])


def _open_data(spec, batch_size=128, eval_limit=None, training=False, per_sample=None):
    """Opens `spec`'s data: arrays in memory, or folders and file lists streamed.

    Streamed sources are read whole in batches of `batch_size` (the global
    batch; `launch.stream_share` gives a process its files of each) and
    split (class-stratified, seed 0) into a training
    part and a test part of at most 20 % (1,000 images); `eval_limit`
    random images of each are decoded for kNN and figures, so memory does
    not grow with the data. `per_sample` ("labels" or "indices", what the
    method declares it needs) makes the training stream yield them with the
    images (indices: each file's position in the training part).
    """
    name, size, limit = spec["data"], spec.get("image_size"), spec.get("limit")
    try:
        if _is_stream(name):
            return _open_stream(spec, batch_size, eval_limit, training, per_sample)
        (x_train, y_train), (x_test, y_test) = data.load(name, data_dir=spec.get("data_dir"))
    except ValueError as e:
        raise SystemExit(f"keras-ssl: {e}")
    if limit:
        x_train, y_train = x_train[:limit], (None if y_train is None else y_train[:limit])
    if size and tuple(x_train.shape[1:3]) != (size, size):
        x_train, x_test = data.resize_images(x_train, size), data.resize_images(x_test, size)
    return _Data(x_train, (x_train, y_train), (x_test, y_test), False, len(x_train))


def _open_stream(spec, batch_size, eval_limit, training, per_sample=None):
    """`_open_data` for an image folder or a file list."""
    name, limit, seed = spec["data"], spec.get("limit"), spec.get("seed", 0)
    make = data.ImageFiles.from_folder if os.path.isdir(name) else data.ImageFiles.from_list
    # Every file in global batches, as one process reads them; each process's share is `launch.stream_share`'s.
    size = spec.get("image_size") or 96
    stream = make(name, image_size=size, batch_size=batch_size, seed=seed, shuffle=training, shard=False)
    train, test = stream, None
    if stream.labels is not None and len(stream.files) >= 20:
        train, test = stream.split(min(0.2, 1000 / len(stream.files)), seed=0)
    if limit:
        train = train.subset(_some(len(train.files), limit, seed))
    if per_sample == "indices" or (per_sample == "labels" and train.labels is not None):
        train = train.subset(np.arange(len(train.files)), **{f"with_{per_sample}": True})
    n = eval_limit or len(stream.files)
    x_train, y_train = train.subset(
        _some(len(train.files), n, 0), shuffle=False, drop_remainder=False, with_labels=False, with_indices=False
    ).to_arrays()
    x_test, y_test = (
        (x_train[:0], None)
        if test is None
        else test.subset(_some(len(test.files), n, 0), drop_remainder=False).to_arrays()
    )
    return _Data(train, (x_train, y_train), (x_test, y_test), True, len(train.files))


def _some(total, count, seed):
    """Sorted indices of `count` random items of `total` (all when fewer)."""
    if count >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:count])


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
