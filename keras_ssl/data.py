"""Loading image datasets and feeding them to `fit`.

- `load(source)`: a named dataset, an `.npz` file or an image folder, as
  NumPy arrays `(x_train, y_train), (x_test, y_test)`.
- `to_dataset(data)`: makes any batch source acceptable to `model.fit`.
- `check_images(x)`: rejects bad image batches with a message saying why.
- `to_unit_float(x)`: images as float32 in [0, 1].

Nothing here imports TensorFlow or PyTorch: their objects are recognised by
duck typing, so `keras_ssl` imports on any backend with or without them.
"""

import lzma
import os
import zipfile
import zlib

import keras
import numpy as np

KERAS_DATASETS = ("cifar10", "mnist", "fashion_mnist")
NAMES = KERAS_DATASETS + ("digits",)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def load(name, data_dir=None, image_size=None, test_fraction=0.2, seed=0):
    """Loads an image dataset as NumPy arrays.

    Args:
        name: one of
            - `"cifar10"`, `"mnist"`, `"fashion_mnist"`: read from
              `<data_dir>/<name>.npz` (or `$KERAS_SSL_DATA_DIR/<name>.npz`),
              else downloaded by `keras.datasets.<name>.load_data()`;
            - `"digits"`: scikit-learn's bundled 8x8 digits, scaled to uint8
              and resized to 32x32 (bilinear), split 1438/359, stratified;
            - a path to an `.npz` with keys `x_train` (required), `y_train`,
              `x_test`, `y_test`;
            - a path to an image folder: one subfolder per class (labels are
              the sorted subfolder names' indices) or a flat folder of images
              (no labels). Needs Pillow.
        data_dir: folder holding `<name>.npz` for the named datasets.
        image_size: `int` or `(height, width)` to which folder images are
            resized; defaults to the first image's size.
        test_fraction: share of images held out as the test split when the
            source has none (folders, `.npz` without `x_test`); stratified
            by class when labels exist.
        seed: seed of that split.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: uint8 images `(N, H, W, C)`
        and int64 labels `(N,)`, or `None` labels for unlabeled sources.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load("digits")
        >>> x_train.shape, x_train.dtype
        ((1438, 32, 32, 1), dtype('uint8'))
    """
    name = os.fspath(name)
    if name in KERAS_DATASETS:
        return _load_keras_dataset(name, data_dir)
    if name == "digits":
        return _load_digits(seed)
    if os.path.isfile(name) and name.endswith(".npz"):
        return _load_npz(name, test_fraction, seed)
    if os.path.isdir(name):
        return _load_folder(name, image_size, test_fraction, seed)
    raise ValueError(
        f"unknown dataset {name!r}: expected one of {', '.join(NAMES)}, the path "
        "of an existing .npz file (keys x_train, y_train, x_test, y_test), or the "
        "path of an existing image folder (one subfolder per class, or flat)."
    )


def to_dataset(data, batch_size=None):
    """Makes a batch source acceptable to `model.fit` / `model.predict`.

    Keras rejects Python generators, torch `DataLoader`s and `PyDataset`s
    that yield a bare image batch `x` instead of a tuple `(x,)`, and lists
    of batches altogether. Those are wrapped so that every batch is a tuple;
    NumPy arrays and `tf.data` datasets are returned unchanged.

    Args:
        data: a NumPy array (or a dict of them); a `tf.data.Dataset`; a `keras.utils.PyDataset`;
            a torch `DataLoader` or map-style torch `Dataset`; a list (or
            other sequence) of batches; a generator or other iterable of
            batches. Batches may be `x`, `(x,)`, `(x, y)` or a dict.
        batch_size: batches a `tf.data.Dataset` or torch `Dataset` of single
            images; ignored otherwise.

    Returns:
        An object `fit` accepts, in the source's batch order. Generators and
        iterables without indexing are read once, like any generator in
        Keras: give several epochs a `PyDataset`, `DataLoader` or list.

    Example:
        >>> def batches():
        ...     for _ in range(10):
        ...         yield np.random.randint(0, 256, (32, 32, 32, 3), "uint8")
        >>> model.fit(to_dataset(batches()), epochs=1)
    """
    if isinstance(data, (np.ndarray, dict)):
        return data
    if isinstance(data, tuple) and data and all(isinstance(a, np.ndarray) for a in data):
        # fit(x=(images, labels)) would read the tuple as two model inputs
        raise TypeError(
            "got a tuple of NumPy arrays: pass arrays to fit directly (fit(x, y)), "
            "or give a list of batches."
        )
    if _is_from(data, "tensorflow", "DatasetV2"):
        spec = data.element_spec
        if getattr(spec, "shape", None) is not None and spec.shape.rank == 3:
            if batch_size is None:
                raise ValueError(
                    "the tf.data.Dataset yields single images of shape "
                    f"{spec.shape}; pass batch_size= to batch them."
                )
            return data.batch(batch_size)
        return data
    if _is_from(data, "torch", "DataLoader"):
        return _tuple_loader(data)
    if _is_from(data, "torch", "Dataset") and hasattr(data, "__len__"):
        if batch_size is None:
            raise ValueError("a torch Dataset yields single samples; pass batch_size=.")
        return _SampleBatches(data, batch_size)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(
            "expected images as a NumPy array, tf.data.Dataset, keras.utils.PyDataset, "
            f"torch DataLoader or an iterable of batches, got {type(data).__name__}."
        )
    if isinstance(data, keras.utils.PyDataset) or (
        hasattr(data, "__getitem__") and hasattr(data, "__len__")
    ):
        return _IndexedBatches(data)
    return (_as_tuple(batch) for batch in data)


def check_images(x, channels=None, min_batch=None, value_range=None):
    """Checks an image batch and returns its pixel value range.

    Args:
        x: NumPy array `(N, H, W, C)`.
        channels: required channel count `C`, if any.
        min_batch: required minimum number of images, if any.
        value_range: declared `(low, high)` of the pixel values. `None`
            means uint8 images in [0, 255] or float images in [0, 1]; other
            integer dtypes must declare it.

    Returns:
        `(low, high)` as floats: the range to map onto [0, 1].

    Raises:
        ValueError: naming the problem (rank, channels, empty batch, dtype,
            NaN/Inf, values outside the range).

    Example:
        >>> check_images(np.zeros((8, 32, 32, 3), "uint8"))
        (0.0, 255.0)
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(
            f"expected images of rank 4 (batch, height, width, channels), got shape {x.shape}."
        )
    if x.shape[0] == 0:
        raise ValueError(f"the image batch is empty (shape {x.shape}).")
    if min_batch is not None and x.shape[0] < min_batch:
        raise ValueError(f"expected at least {min_batch} images, got {x.shape[0]}.")
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(
            f"expected images with {channels} channel(s), got {x.shape[-1]} "
            f"(shape {x.shape}); channels go last."
        )
    kind = x.dtype.kind
    if kind not in "uif":
        raise ValueError(f"images must have an integer or float dtype, got {x.dtype}.")
    if value_range is None:
        if x.dtype == np.uint8:
            return (0.0, 255.0)
        if kind in "ui":
            raise ValueError(
                f"integer images of dtype {x.dtype} need value_range=(0, 255) "
                "(or their actual range); only uint8 is assumed to be in [0, 255]."
            )
        value_range = (0.0, 1.0)
        hint = " Pass value_range=(0, 255) for float images in [0, 255]."
    else:
        hint = ""
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with low < high, got {value_range}.")
    if kind == "f":
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise ValueError(f"the images contain {bad} NaN or Inf value(s).")
    lo, hi = x.min(), x.max()
    if lo < low or hi > high:
        raise ValueError(
            f"image values span [{lo}, {hi}], outside value_range ({low:g}, {high:g}).{hint}"
        )
    return (low, high)


def to_unit_float(x, value_range=None):
    """Images as float32 in [0, 1].

    Args:
        x: NumPy images; uint8 are taken as [0, 255] and float as [0, 1]
            unless `value_range` says otherwise.
        value_range: `(low, high)` mapped onto `(0, 1)`.

    Returns:
        float32 NumPy array of the same shape.

    Example:
        >>> to_unit_float(np.array([0, 255], "uint8"))
        array([0., 1.], dtype=float32)
    """
    x = np.asarray(x)
    if value_range is None:
        if x.dtype == np.uint8:
            value_range = (0.0, 255.0)
        elif x.dtype.kind == "f":
            return x.astype("float32", copy=False)
        else:
            raise ValueError(f"images of dtype {x.dtype} need value_range=(low, high).")
    low, high = (float(v) for v in value_range)
    return ((x.astype("float32") - low) / (high - low)).astype("float32", copy=False)


# ------------------------------------------------------------------ sources
def _load_keras_dataset(name, data_dir):
    data_dir = data_dir or os.environ.get("KERAS_SSL_DATA_DIR")
    path = os.path.join(data_dir, f"{name}.npz") if data_dir else None
    if path and os.path.isfile(path):
        return _load_npz(path, test_fraction=0.2, seed=0)
    try:
        splits = getattr(keras.datasets, name).load_data()
    except Exception as e:  # URLError, HTTPError, OSError...: all mean "no data"
        where = f"{path} does not exist and " if path else ""
        raise ValueError(
            f"could not load {name!r}: {where}keras.datasets.{name}.load_data() "
            f"failed ({type(e).__name__}: {e}). Put {name}.npz in data_dir= or "
            "$KERAS_SSL_DATA_DIR."
        ) from e
    return tuple((_images(x), _labels(y)) for x, y in splits)


def _load_digits(seed):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.round(digits.images * (255.0 / 16.0))
    x = _resize_bilinear(x[..., None], (32, 32))
    x = np.clip(np.round(x), 0, 255).astype("uint8")
    return _split(x, digits.target.astype("int64"), 0.2, seed)


def _load_npz(path, test_fraction, seed):
    arrays = _read_npz(path)
    x = _images(arrays["x_train"])
    y = _labels(arrays.get("y_train"))
    if "x_test" not in arrays:
        return _split(x, y, test_fraction, seed)
    return (x, y), (_images(arrays["x_test"]), _labels(arrays.get("y_test")))


def _read_npz(path):
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, lzma.LZMAError) as e:
        raise ValueError(f"could not read {path}: {type(e).__name__}: {e}") from e
    if "x_train" not in arrays:
        raise ValueError(f"{path} has no 'x_train' array (keys: {sorted(arrays)}).")
    return arrays


def _load_folder(root, image_size, test_fraction, seed):
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("reading an image folder needs Pillow: pip install pillow") from e
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    if classes:
        files = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
                 for f in sorted(os.listdir(os.path.join(root, c)))]
    else:
        files = [(os.path.join(root, f), None) for f in sorted(os.listdir(root))]
    files = [(f, label) for f, label in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root}.")
    with Image.open(files[0][0]) as first:
        mode = "L" if first.mode in ("1", "L", "I", "I;16", "F") else "RGB"
        if image_size is None:
            image_size = first.size[::-1]
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    images = []
    for f, _ in files:
        with Image.open(f) as im:
            im = im.convert(mode)
            if im.size != (width, height):
                im = im.resize((width, height), Image.BILINEAR)
            images.append(np.asarray(im, dtype="uint8"))
    x = _images(np.stack(images))
    y = np.array([label for _, label in files], "int64") if classes else None
    return _split(x, y, test_fraction, seed)


# ------------------------------------------------------------------ helpers
def _images(x):
    x = np.asarray(x)
    return x[..., None] if x.ndim == 3 else x  # grayscale (N, H, W) gets a channel axis


def _labels(y):
    return None if y is None else np.asarray(y).reshape(-1).astype("int64")


def _split(x, y, test_fraction, seed):
    """Deterministic train/test split, stratified when labels exist."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    labels = np.zeros(len(x), "int64") if y is None else y
    test = np.zeros(len(x), bool)
    test[pick_per_class(labels, test_fraction, seed)] = True
    if y is None:
        return (x[~test], None), (x[test], None)
    return (x[~test], y[~test]), (x[test], y[test])


def pick_per_class(labels, fraction, seed, minimum=0):
    """Sorted indices of `round(fraction * n_c)` (at least `minimum`) random items per class.

    Args:
        labels: integer labels `(N,)`.
        fraction: share of each class to pick.
        seed: NumPy seed.
        minimum: least items picked per class.

    Example:
        >>> keep = pick_per_class(y_train, 0.1, seed=0)   # a class-balanced 10 %
    """
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        count = min(len(members), max(minimum, int(round(fraction * len(members)))))
        picked.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(picked))


def _resize_bilinear(x, size):
    """Bilinear resize of `(N, H, W, C)` with half-pixel centres (no antialiasing)."""

    def weights(n_in, n_out):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        w = np.zeros((n_out, n_in))
        np.add.at(w, (np.arange(n_out), lo), 1 - (pos - lo))
        np.add.at(w, (np.arange(n_out), hi), pos - lo)
        return w

    wh, ww = weights(x.shape[1], size[0]), weights(x.shape[2], size[1])
    return np.einsum("ih,nhwc,jw->nijc", wh, x.astype("float64"), ww)


def _is_from(obj, package, class_name):
    """Whether `obj` is an instance of `package`'s class `class_name` (no import)."""
    return any(
        cls.__name__ == class_name and cls.__module__.split(".")[0] == package
        for cls in type(obj).__mro__
    )


def _as_tuple(batch):
    if isinstance(batch, (tuple, dict)):
        return batch
    return tuple(batch) if isinstance(batch, list) else (batch,)


def _tuple_loader(loader):
    """A shallow copy of a torch `DataLoader` whose batches are tuples."""
    # DataLoader refuses copy.copy (its __getstate__ raises); copying the
    # instance dict keeps every setting (sampler, workers, pinning...).
    copy = object.__new__(type(loader))
    copy.__dict__.update(loader.__dict__)
    copy._iterator = None  # persistent workers must not be shared with the original
    copy.collate_fn = _TupleCollate(loader.collate_fn)
    return copy


class _TupleCollate:
    """Picklable collate function (for worker processes) returning tuples."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, samples):
        return _as_tuple(self.collate_fn(samples))


class _IndexedBatches(keras.utils.PyDataset):
    """A `PyDataset` or sequence of batches whose batches are made tuples."""

    def __init__(self, source):
        super().__init__(
            workers=getattr(source, "workers", 1),
            use_multiprocessing=getattr(source, "use_multiprocessing", False),
            max_queue_size=getattr(source, "max_queue_size", 10),
        )
        self.source = source

    @property
    def num_batches(self):
        if isinstance(self.source, keras.utils.PyDataset):
            return self.source.num_batches
        return len(self.source)

    def __getitem__(self, index):
        return _as_tuple(self.source[index])

    def on_epoch_begin(self):
        getattr(self.source, "on_epoch_begin", lambda: None)()

    def on_epoch_end(self):
        getattr(self.source, "on_epoch_end", lambda: None)()


class _SampleBatches(keras.utils.PyDataset):
    """A map-style dataset of single samples, batched by stacking."""

    def __init__(self, source, batch_size):
        super().__init__()
        self.source = source
        self.batch_size = int(batch_size)

    @property
    def num_batches(self):
        return -(-len(self.source) // self.batch_size)

    def __getitem__(self, index):
        stop = min(len(self.source), (index + 1) * self.batch_size)
        samples = [_as_tuple(self.source[i]) for i in range(index * self.batch_size, stop)]
        return tuple(np.stack([np.asarray(s[j]) for s in samples]) for j in range(len(samples[0])))
