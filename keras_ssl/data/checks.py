"""Image batch checks shared by every source (arrays, streams, loaders)."""

import math
import warnings

import keras
import numpy as np

from keras_ssl import keras_compat
from keras_ssl.backend import tf_data


class FixableError(ValueError):
    """A bad-input error that one argument fixes; front ends (the CLI) spell that argument their own way.

    Args:
        template: the message, with `{fix}` where the argument to pass goes.
        argument: the Python argument's name, e.g. `"value_range"`.
        value: the value to pass, e.g. `(0, 255)`.

    Example:
        >>> error = keras_ssl.data.FixableError("float images in [0, 255]? Pass {fix}.", "value_range", (0, 255))
        >>> str(error), error.argument, error.value
        ('float images in [0, 255]? Pass value_range=(0, 255).', 'value_range', (0, 255))
    """

    def __init__(self, template, argument, value):
        self.template, self.argument, self.value = template, argument, value
        super().__init__(template.replace("{fix}", f"{argument}={value!r}"))

    def __reduce__(self):  # pickled across worker processes with its three arguments
        return type(self), (self.template, self.argument, self.value)


def check_value_range(value_range):
    """`value_range` as `(low, high)` floats, or None; rejects anything else.

    Args:
        value_range: None, or two finite numbers with `low < high`.

    Example:
        >>> keras_ssl.data.check_value_range((0, 255))
        (0.0, 255.0)
    """
    if value_range is None:
        return None
    bad = ValueError(
        f"`value_range` must be (low, high): two finite numbers with low < high, e.g. (0, 255); got {value_range!r}."
    )
    if isinstance(value_range, (str, bytes)) or not hasattr(value_range, "__len__") or len(value_range) != 2:
        raise bad
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise bad from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise bad
    return (low, high)


def looks_channels_first(shape):
    """Whether a rank-4 shape is `(N, C, H, W)` rather than `(N, H, W, C)`.

    Example:
        >>> keras_ssl.data.looks_channels_first((16, 3, 64, 64))
        True
    """
    return len(shape) == 4 and shape[1] in (1, 3, 4) and shape[-1] not in (1, 3, 4) and shape[-1] is not None


def check_image_shape(shape, channels=None, min_batch=None, min_size=None):
    """The shape part of `check_images`: rank, batch, layout, channels and size, without reading a pixel.

    It costs nothing next to a step, so streams run it on every batch
    (`prepare_fit_data`): a later batch may differ from the first.

    Args:
        shape: `(N, H, W, C)` of an image batch (None for an unknown dimension).
        channels, min_batch, min_size: as in `check_images`.

    Example:
        >>> keras_ssl.data.check_image_shape((8, 8, 8, 3), channels=3, min_size=16)
        Traceback (most recent call last):
        ...
        ValueError: images of 8x8 pixels are smaller than the 16x16 views; ...
    """
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(f"expected images of rank 4 (batch, height, width, channels), got shape {shape}.")
    if shape[0] == 0:
        raise ValueError(f"the image batch is empty (shape {shape}).")
    if min_batch is not None and shape[0] is not None and shape[0] < min_batch:
        raise ValueError(f"expected at least {min_batch} images, got {shape[0]}.")
    if channels is not None and shape[-1] is not None and shape[-1] != channels:
        if looks_channels_first(shape):
            raise ValueError(
                f"the images look channels-first (N, C, H, W) = {shape}; keras_ssl takes "
                "channels-last (N, H, W, C). Transpose them, e.g. x.permute(0, 2, 3, 1) in "
                "PyTorch or tf.transpose(x, (0, 2, 3, 1))."
            )
        raise ValueError(
            f"expected images with {channels} channel(s), got {shape[-1]} (shape {shape}); channels go last."
        )
    sides = [s for s in shape[1:3] if s is not None]
    if min_size is not None and sides and min(sides) < min_size:
        raise ValueError(
            f"images of {shape[1]}x{shape[2]} pixels are smaller than the "
            f"{min_size}x{min_size} views; pass image_size=<at most the image side> "
            "(and a matching encoder), or resize the images."
        )


def check_images(x, channels=None, min_batch=None, value_range=None, min_size=None):
    """Checks an image batch and returns its pixel value range.

    The same checks run on NumPy arrays and on the first batch of every
    streaming source (`tf.data`, `PyDataset`, generators, torch loaders).

    Args:
        x: images `(N, H, W, C)` (NumPy, or a tensor NumPy can read).
        channels: required channel count `C`, if any.
        min_batch: required minimum number of images, if any.
        value_range: declared `(low, high)` of the pixel values. `None`
            means uint8 images in [0, 255] or float images in [0, 1]; other
            integer dtypes must declare it.
        min_size: smallest allowed height and width (the view size), if any.

    Returns:
        `(low, high)` as floats: the range to map onto [0, 1].

    Raises:
        ValueError: naming the problem (rank, channels-first layout,
            channels, empty batch, size, dtype, NaN/Inf, values outside the
            range).

    Example:
        >>> keras_ssl.data.check_images(np.zeros((8, 32, 32, 3), "uint8"))
        (0.0, 255.0)
        >>> keras_ssl.data.check_images(np.zeros((8, 3, 32, 32), "float32"), channels=3)
        Traceback (most recent call last):
        ...
        ValueError: the images look channels-first (N, C, H, W) = (8, 3, 32, 32); ...
    """
    x = np.asarray(x)
    check_image_shape(x.shape, channels, min_batch, min_size)
    kind = x.dtype.kind
    if kind not in "uif":
        raise ValueError(f"images must have an integer or float dtype, got {x.dtype}.")
    value_range = check_value_range(value_range)
    hint = ""
    if value_range is None:
        if x.dtype == np.uint8:
            return (0.0, 255.0)
        if kind in "ui":
            raise FixableError(
                f"integer images of dtype {x.dtype} need {{fix}} (or their actual range); only uint8 is "
                "assumed to be in [0, 255].",
                "value_range",
                (0, 255),
            )
        value_range = (0.0, 1.0)
        hint = " Pass {fix} for float images in [0, 255]."
    low, high = value_range
    if kind == "f":
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise ValueError(f"the images contain {bad} NaN or Inf value(s).")
    lo, hi = x.min(), x.max()
    if lo < low or hi > high:
        message = f"image values span [{lo}, {hi}], outside value_range ({low:g}, {high:g}).{hint}"
        raise FixableError(message, "value_range", (0, 255)) if hint else ValueError(message)
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
        >>> keras_ssl.data.to_unit_float(np.array([0, 255], "uint8"))
        array([0., 1.], dtype=float32)
    """
    x = np.asarray(x)
    value_range = check_value_range(value_range)
    if value_range is None:
        if x.dtype == np.uint8:
            value_range = (0.0, 255.0)
        elif x.dtype.kind == "f":
            return x.astype("float32", copy=False)
        else:
            raise ValueError(f"images of dtype {x.dtype} need value_range=(low, high).")
    low, high = value_range
    return ((x.astype("float32") - low) / (high - low)).astype("float32", copy=False)


class BatchRules:
    """The checks every batch of a stream gets as it is read, outside the compiled step.

    A stream's first batch is checked whole (`check_images`); a later batch
    can still differ, so each batch read on the Python side (`PyDataset`,
    list of batches, generator, torch `DataLoader` worker) has its shape
    checked (`check_image_shape`: no pixel is read) and its per-sample part
    packed (`data.per_sample.PerSample`). It holds plain values only, so
    torch worker processes can run it. `prepare_fit_data` makes it.

    Args:
        channels, min_size: as in `check_images`.
        min_batch: fewest images a batch may have (the method's minimum).
        pack: None, or a `PerSample` that checks and packs the batch's labels or indices.

    Example:
        >>> from keras_ssl.data.checks import BatchRules
        >>> rules = BatchRules(channels=3, min_size=16, min_batch=2)
        >>> rules((x_train[:8],))[0].shape
        (8, 16, 16, 3)
        >>> rules((x_train[:1],), where="batch 7")
        Traceback (most recent call last):
        ...
        ValueError: batch 7 has 1 image(s), fewer than the 2 the method needs in a batch; ...
    """

    def __init__(self, channels=None, min_size=None, min_batch=None, pack=None):
        self.channels, self.min_size, self.min_batch, self.pack = channels, min_size, min_batch, pack
        self.skipped = 0  # images in the short batches skipped so far

    def short(self, batch):
        """Whether `batch` (a tuple, images first) has fewer images than the method needs."""
        count = len(batch[0])
        return self.min_batch is not None and 0 < count < self.min_batch

    def short_error(self, count, where="a batch"):
        """The error for a batch of `count` images, fewer than the method needs."""
        return ValueError(
            f"{where} has {count} image(s), fewer than the {self.min_batch} the method needs in a batch; "
            "drop the last incomplete batch: batch with drop_remainder=True (tf.data, ImageFiles) or "
            "drop_last=True (torch DataLoader), or make every batch at least that large."
        )

    def check_last(self, source):
        """`source`, refused before training when a batch of its is known to be too small.

        A `PyDataset`'s last batch is read (unless it drops its remainder); a
        torch `DataLoader`'s size is computed from its dataset's length; a
        `tf.data.Dataset`'s smallest batch is found from its `batch` step
        (`keras_compat.smallest_batch`: reading it would run the whole
        pipeline). A `tf.data` whose smallest batch is not known (its length
        is not, or a step such as `take` follows `batch`) comes back without
        its short batches, each skipped with a warning (`skip`).
        """
        if self.min_batch is None:
            return source
        if hasattr(source, "element_spec") and hasattr(source, "filter"):  # tf.data, recognised without importing it
            return self._tf_data(source)
        if isinstance(source, keras.utils.PyDataset):
            count = source.num_batches
            inner = getattr(source, "source", None)
            drops = getattr(source, "drop_remainder", False) or getattr(inner, "drop_remainder", False)
            if count and count > 1 and not drops:
                source[count - 1]  # a short batch there is refused by the source's rules (`__call__`)
        elif hasattr(source, "drop_last") and not source.drop_last and getattr(source, "batch_size", None):
            total = len(source.dataset) if hasattr(source.dataset, "__len__") else 0
            last = total % source.batch_size
            if total > source.batch_size and 0 < last < self.min_batch:
                error = self.short_error(last, "the DataLoader's last batch")
                raise ValueError(f"{error.args[0]} Pass DataLoader(..., drop_last=True).")
        return source

    def _tf_data(self, dataset):
        images = dataset.element_spec  # `(images, ...)` or `((images, ...), ...)`: images first
        while isinstance(images, (tuple, list)):
            images = images[0]
        if self.min_batch <= 1 or images.shape[0] is not None:
            return dataset  # every batch has the first one's size
        smallest = keras_compat.smallest_batch(dataset)
        if smallest is None:
            return tf_data.drop_short_batches(dataset, self.min_batch, self.skip)
        if smallest < self.min_batch:
            raise self.short_error(smallest, "the dataset's last batch")
        return dataset

    def skip(self, count, where="a batch"):
        """Warns that `where`, of `count` images, fewer than the method needs, was skipped; counts them."""
        self.skipped += count
        warnings.warn(
            f"skipped {where} of {count} image(s), fewer than the {self.min_batch} the method needs in a batch "
            f"({self.skipped} image(s) skipped in all); batch with drop_remainder=True to leave the incomplete "
            "last batch out yourself.",
            stacklevel=2,
        )

    def stream(self, batches):
        """A generator's tuple batches through the rules; a short batch after the first is skipped with a warning.

        A generator's length is unknown until it ends, so its short last
        batch cannot be refused up front; skipping it keeps the epoch.
        """
        for i, batch in enumerate(batches):
            if i and self.short(batch):
                self.skip(len(batch[0]), f"batch {i}")
                continue
            yield self(batch, f"batch {i}" if i else None)

    def __call__(self, batch, where=None):
        """`batch` checked and packed; `where` (e.g. "batch 3") prefixes the messages and asks for the size check."""
        try:
            check_image_shape(np.shape(batch[0]), self.channels, None, self.min_size)
        except ValueError as e:
            raise ValueError(f"{where}: {e}" if where else str(e)) from None
        # The first batch's size gets the method's own check (`prepare_fit_data`'s `check_batch`).
        if where and self.short(batch):
            raise self.short_error(len(batch[0]), where)
        return batch if self.pack is None else self.pack(batch, where)
