"""Datasets that fit in memory, as NumPy arrays (`load`)."""

import lzma
import os
import zipfile
import zlib

import keras
import numpy as np
from sklearn.datasets import load_digits

from keras_ssl.data.files import decode_image, folder_files
from keras_ssl.data.image_files import ImageFiles
from keras_ssl.data.splits import split

KERAS_DATASETS = ("cifar10", "mnist", "fashion_mnist")
NAMES = KERAS_DATASETS + ("digits", "scattered_digits")


def load(name, data_dir=None, image_size=None, test_fraction=0.2, seed=0):
    """Loads an image dataset as NumPy arrays.

    Args:
        name: one of
            - `"cifar10"`, `"mnist"`, `"fashion_mnist"`: read from
              `<data_dir>/<name>.npz` (or `$KERAS_SSL_DATA_DIR/<name>.npz`),
              else downloaded by `keras.datasets.<name>.load_data()`;
            - `"digits"`: scikit-learn's bundled 8x8 digits, scaled to uint8
              and resized to 32x32 (bilinear), split 1438/359, stratified;
            - `"scattered_digits"`: the same digits drawn at a random size
              (12-20 px) and position on a black 32x32 canvas, twice each
              (2876 train / 718 test images, the test digits unseen): no
              download, and unlike centred digits, raw pixels do not solve
              it (see `scattered_digits`);
            - a path to an `.npz` with keys `x_train` (required), `y_train`,
              `x_test`, `y_test`;
            - a path to an image folder: one subfolder per class (labels are
              the sorted subfolder names' indices) or a flat folder of images
              (no labels), decoded whole into memory: stream large folders
              with `ImageFiles.from_folder` instead.
        data_dir: folder holding `<name>.npz` for the named datasets.
        image_size: `int` or `(height, width)` to which folder images are
            resized (aspect kept) and centre-cropped; defaults to the first
            image's size.
        test_fraction: share of images held out as the test split when the
            source has none (folders, `.npz` without `x_test`); stratified
            by class when labels exist.
        seed: seed of that split.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: uint8 images `(N, H, W, C)`
        and int64 labels `(N,)`, or `None` labels for unlabeled sources.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = keras_ssl.data.load("digits")
        >>> x_train.shape, x_train.dtype, x_test.shape, y_test.dtype
        ((1438, 32, 32, 1), dtype('uint8'), (359, 32, 32, 1), dtype('int64'))
    """
    name = os.fspath(name)
    if name in KERAS_DATASETS:
        return _load_keras_dataset(name, data_dir)
    if name == "digits":
        return _load_digits(seed)
    if name == "scattered_digits":
        return scattered_digits(seed=seed)
    if os.path.isfile(name) and name.endswith(".npz"):
        return _load_npz(name, test_fraction, seed)
    if os.path.isdir(name):
        return _load_folder(name, image_size, test_fraction, seed)
    raise ValueError(
        f"unknown dataset {name!r}: expected one of {', '.join(NAMES)}, the path "
        "of an existing .npz file (keys x_train, y_train, x_test, y_test), or the "
        "path of an existing image folder (one subfolder per class, or flat)."
    )


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
    digits = load_digits()
    x = np.round(digits.images * (255.0 / 16.0))
    x = _resize_bilinear(x[..., None], (32, 32))
    x = np.clip(np.round(x), 0, 255).astype("uint8")
    return split(x, digits.target.astype("int64"), 0.2, seed)


def scattered_digits(copies=2, size=32, digit_sizes=(12, 20), seed=0):
    """scikit-learn's digits at random sizes and positions: the demo's data.

    Centred, size-normalised 8x8 digits are a poor test of representation
    learning: raw pixels already reach 0.98 kNN accuracy (k=5) and no
    two-minute SSL run beats that. Real photos vary in where and how large
    the object is; so here each digit is resized (bilinear) to a random side
    in `digit_sizes` and pasted at a random position of a black canvas,
    `copies` times. Raw pixels then score about 0.53 (weighted kNN, k=200),
    and an encoder that learns shape from crops can beat them.

    Args:
        copies: placements of each digit.
        size: canvas side.
        digit_sizes: `(smallest, largest)` side of a drawn digit.
        seed: seed of the train/test split of the digits and of placements.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: uint8 `(N, size, size, 1)`
        and int64 labels; train and test hold different digits.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = keras_ssl.data.scattered_digits()
        >>> x_train.shape, x_test.shape
        ((2876, 32, 32, 1), (718, 32, 32, 1))
    """
    digits = load_digits()
    (train, y_train), (test, y_test) = split(
        np.arange(len(digits.target))[:, None, None, None], digits.target.astype("int64"), 0.2, seed
    )
    rng = np.random.default_rng(seed)
    low, high = digit_sizes
    if not 1 <= low <= high <= size:
        raise ValueError(f"digit_sizes must satisfy 1 <= low <= high <= size, got {digit_sizes} for size {size}.")

    def draw(indices):
        indices = np.repeat(indices.reshape(-1), copies)
        canvas = np.zeros((len(indices), size, size, 1), "float32")
        sides = rng.integers(low, high + 1, len(indices))
        corners = rng.integers(0, size - sides[:, None] + 1, (len(indices), 2))
        for side in np.unique(sides):
            rows = np.flatnonzero(sides == side)
            glyphs = _resize_bilinear(digits.images[indices[rows], :, :, None] / 16.0, (int(side), int(side)))
            for row, glyph in zip(rows, glyphs):
                y, x = corners[row]
                canvas[row, y : y + side, x : x + side] = glyph
        return np.clip(np.round(255.0 * canvas), 0, 255).astype("uint8")

    return (draw(train), np.repeat(y_train, copies)), (draw(test), np.repeat(y_test, copies))


def _load_npz(path, test_fraction, seed):
    arrays = _read_npz(path)
    x = _images(arrays["x_train"])
    y = _labels(arrays.get("y_train"))
    if y is not None and len(y) != len(x):
        raise ValueError(f"{path}: y_train has {len(y)} labels for {len(x)} images in x_train.")
    if "x_test" not in arrays:
        return split(x, y, test_fraction, seed)
    x_test, y_test = _images(arrays["x_test"]), _labels(arrays.get("y_test"))
    if y_test is not None and len(y_test) != len(x_test):
        raise ValueError(f"{path}: y_test has {len(y_test)} labels for {len(x_test)} images in x_test.")
    return (x, y), (x_test, y_test)


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
    files, labels, _, _ = folder_files(root)
    if image_size is None:
        image_size = decode_image(files[0])[0].shape[:2]
    x, y = ImageFiles(files, labels, image_size=image_size, batch_size=256, shuffle=False).to_arrays()
    return split(x, y, test_fraction, seed)


# ------------------------------------------------------------------ helpers
def _images(x):
    x = np.asarray(x)
    return x[..., None] if x.ndim == 3 else x  # grayscale (N, H, W) gets a channel axis


def _labels(y):
    return None if y is None else np.asarray(y).reshape(-1).astype("int64")


def resize_images(x, size, chunk=512):
    """Images resized to cover `size` (aspect kept) and centre-cropped, as `ImageFiles` does.

    Args:
        x: images `(N, H, W, C)`.
        size: int or `(height, width)`.
        chunk: images resized at a time.

    Returns:
        Images `(N, height, width, C)` of `x`'s dtype.

    Example:
        >>> large = keras_ssl.data.resize_images(x_train, 32)   # 16 px images at 32 px
        >>> large.shape, large.dtype
        ((64, 32, 32, 3), dtype('uint8'))
    """
    size = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
    out = np.empty((len(x), *size, x.shape[-1]), x.dtype)
    for start in range(0, len(x), chunk):
        part = keras.ops.image.resize(
            x[start : start + chunk].astype("float32"), size, crop_to_aspect_ratio=True, antialias=True
        )
        part = keras.ops.convert_to_numpy(part)
        if x.dtype.kind in "ui":
            info = np.iinfo(x.dtype)
            part = np.clip(np.round(part), info.min, info.max)
        out[start : start + chunk] = part
    return out


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
