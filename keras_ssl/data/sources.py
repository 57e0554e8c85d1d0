"""Any batch source, made acceptable to `fit` and checked like arrays are.

- `to_dataset(data)`: wraps generators, lists, torch loaders and PyDatasets
  so that Keras accepts them, and makes every batch `(x,)` or `(x, y)`
  (dicts and `(x, y, filename)` triples included).
- `prepare_fit_data(x, ...)`: one validation path for every source: arrays
  are checked whole, streams on their first batch, with the same checks
  and messages (`check_images`).

Nothing here imports TensorFlow or PyTorch: their objects are recognised by
duck typing, so `keras_ssl` imports on any backend with or without them.
"""

import keras
import numpy as np

from keras_ssl.data.checks import BatchRules, check_images

IMAGE_KEYS = ("images", "image", "x", "pixel_values", "inputs", "input")
TARGET_KEYS = ("labels", "label", "y", "texts", "text", "tokens", "targets", "target")


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
        ...     for i in range(0, 64, 16):
        ...         yield x_train[i : i + 16]   # bare image batches, which Keras rejects
        >>> data = keras_ssl.data.to_dataset(batches())
        >>> encoder.predict(data, steps=4, verbose=0).shape
        (64, 32)
        >>> listed = keras_ssl.data.to_dataset([{"images": x_train[:8], "labels": y_train[:8]}])
        >>> [a.shape for a in listed[0]]   # a list of dict batches: (images, labels) tuples
        [(8, 16, 16, 3), (8,)]
    """
    return _wrap(data, batch_size, None)


def _wrap(data, batch_size, rules):
    """`to_dataset`, every batch read on the Python side going through `rules` (a `BatchRules`) if given."""
    if isinstance(data, (np.ndarray, dict)):
        return data
    if isinstance(data, tuple) and data and all(isinstance(a, np.ndarray) for a in data):
        # fit(x=(images, labels)) would read the tuple as two model inputs
        raise TypeError(
            "got a tuple of NumPy arrays: pass arrays to fit directly (fit(x, y)), or give a list of batches."
        )
    if _is_from(data, "tensorflow", "DatasetV2"):
        spec = data.element_spec
        if isinstance(spec, dict) or (isinstance(spec, tuple) and len(spec) > 2):
            _select(spec)  # raises here, not inside tf.data, when no key holds images
            data = data.map(lambda *element: _select(element[0] if len(element) == 1 else element))
            spec = data.element_spec
        image_spec = spec[0] if isinstance(spec, tuple) else spec
        shape = getattr(image_spec, "shape", None)
        # (H, W, C) single images; a rank-3 batch without channel axis is left to the rank check.
        if shape is not None and shape.rank == 3 and shape[-1] in (1, 3, 4):
            if batch_size is None:
                raise ValueError(
                    "the tf.data.Dataset yields single images of shape "
                    f"{image_spec.shape}; pass batch_size= to batch them."
                )
            return data.batch(batch_size)
        return data
    if _is_from(data, "torch", "DataLoader"):
        return _tuple_loader(data, rules)
    if _is_from(data, "torch", "Dataset") and hasattr(data, "__len__"):
        if batch_size is None:
            raise ValueError("a torch Dataset yields single samples; pass batch_size=.")
        return _SampleBatches(data, batch_size, rules)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError(
            "expected images as a NumPy array, tf.data.Dataset, keras.utils.PyDataset, "
            f"torch DataLoader or an iterable of batches, got {type(data).__name__}."
        )
    if isinstance(data, keras.utils.PyDataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return _IndexedBatches(data, rules)
    batches = (_select(batch) for batch in data)
    return batches if rules is None else rules.stream(batches)


def _is_from(obj, package, class_name):
    """Whether `obj` is an instance of `package`'s class `class_name` (no import)."""
    return any(cls.__name__ == class_name and cls.__module__.split(".")[0] == package for cls in type(obj).__mro__)


def _select(batch):
    """`batch` as `(x,)` or `(x, y)`: a dict's image and target keys, a triple's first two."""
    if isinstance(batch, dict):
        image = next((k for k in IMAGE_KEYS if k in batch), None)
        if image is None:
            raise ValueError(
                f"the batches are dicts with keys {sorted(batch)}; keras_ssl looks for the images "
                f"under one of {IMAGE_KEYS}. Map them to (images,) or (images, labels) tuples."
            )
        target = next((k for k in TARGET_KEYS if k in batch), None)
        return (batch[image],) if target is None else (batch[image], batch[target])
    if isinstance(batch, (tuple, list)):
        # Keras would read a third element as sample weights (a filename, say).
        return tuple(batch[:2])
    return (batch,)


def _tuple_loader(loader, rules=None):
    """A shallow copy of a torch `DataLoader` whose batches are tuples (through `rules` if given)."""
    # DataLoader refuses copy.copy (its __getstate__ raises); copying the
    # instance dict keeps every setting (sampler, workers, pinning...).
    copy = object.__new__(type(loader))
    copy.__dict__.update(loader.__dict__)
    copy._iterator = None  # persistent workers must not be shared with the original
    copy.collate_fn = _TupleCollate(loader.collate_fn, rules)
    return copy


class _TupleCollate:
    """Picklable collate function (for worker processes) returning tuples, through `rules` if given."""

    def __init__(self, collate_fn, rules=None):
        self.collate_fn, self.rules = collate_fn, rules

    def __call__(self, samples):
        batch = _select(self.collate_fn(samples))
        return batch if self.rules is None else self.rules(batch)


class _IndexedBatches(keras.utils.PyDataset):
    """A `PyDataset` or sequence of batches whose batches are made tuples (through `rules` if given)."""

    def __init__(self, source, rules=None):
        super().__init__(
            workers=getattr(source, "workers", 1),
            use_multiprocessing=getattr(source, "use_multiprocessing", False),
            max_queue_size=getattr(source, "max_queue_size", 10),
        )
        self.source, self.rules = source, rules

    @property
    def num_batches(self):
        if isinstance(self.source, keras.utils.PyDataset):
            return self.source.num_batches
        return len(self.source)

    def __getitem__(self, index):
        batch = _select(self.source[index])
        return batch if self.rules is None else self.rules(batch, f"batch {index}" if index else None)

    def set_epoch(self, epoch):
        getattr(self.source, "set_epoch", lambda epoch: None)(epoch)

    def on_epoch_begin(self):
        getattr(self.source, "on_epoch_begin", lambda: None)()

    def on_epoch_end(self):
        getattr(self.source, "on_epoch_end", lambda: None)()


class _SampleBatches(keras.utils.PyDataset):
    """Single samples stacked into batches; for `fit` (`rules` given) the incomplete last one is left out, as arrays."""

    def __init__(self, source, batch_size, rules=None):
        super().__init__()
        self.source, self.rules, self.drop_remainder = source, rules, rules is not None
        self.batch_size = int(batch_size)

    @property
    def num_batches(self):
        if self.drop_remainder:
            return max(1, len(self.source) // self.batch_size)
        return -(-len(self.source) // self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} of {self.num_batches}")
        stop = min(len(self.source), (index + 1) * self.batch_size)
        samples = [_select(self.source[i]) for i in range(index * self.batch_size, stop)]
        batch = tuple(np.stack([np.asarray(s[j]) for s in samples]) for j in range(len(samples[0])))
        return batch if self.rules is None else self.rules(batch, f"batch {index}" if index else None)


class ArrayBatches(keras.utils.PyDataset):
    """Full batches of in-memory arrays, in an order set by the seed and the epoch alone.

    Keras shuffles NumPy arrays from the global random state, which a
    process resumed from a checkpoint does not share with the one that was
    killed; here epoch `e`'s order is `default_rng([seed, e])`'s
    permutation, so a resumed run sees the batches the uninterrupted run
    saw. `SSLModel.fit` uses it for NumPy images and calls `set_epoch`
    at each epoch start (as PyTorch's `DistributedSampler.set_epoch`).

    Args:
        x: images, `(N, H, W, C)`.
        y: labels or token ids of the same length, or None.
        batch_size: images per batch; the last incomplete batch is left
            out (unless there is only one batch).
        shuffle: a new order every epoch; False keeps the array order.
        seed: seed of the order.
        indices: batches are `((images, indices), ...)`: each image's row in
            `x` (int32) travels with it, for methods that keep per-sample
            state (`needs_indices`). The order is the same either way.
        per_sample: an array of `len(x)` rows (SupCon's labels) that travels
            with the images as `((images, per_sample), ...)`, as `indices`.

    Example:
        >>> batches = keras_ssl.data.ArrayBatches(x_train, batch_size=16, seed=0)
        >>> batches.num_batches
        4
        >>> batches.set_epoch(3); first = batches[0]
        >>> again = keras_ssl.data.ArrayBatches(x_train, batch_size=16, seed=0)
        >>> again.set_epoch(3)   # a resumed process sees the same batches
        >>> first[0].shape, np.array_equal(first[0], again[0][0])
        ((16, 16, 16, 3), True)
        >>> (images, rows), = keras_ssl.data.ArrayBatches(x_train, batch_size=16, seed=0, indices=True)[0]
        >>> np.array_equal(images, x_train[rows])
        True
    """

    def __init__(self, x, y=None, batch_size=32, shuffle=True, seed=0, indices=False, per_sample=None):
        super().__init__()
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.per_sample = np.arange(len(x), dtype="int32") if indices and per_sample is None else per_sample
        self.set_epoch(0)

    def set_epoch(self, epoch):
        """Selects epoch `epoch`'s order (0-based, as Keras counts)."""
        self.epoch = int(epoch)
        n = len(self.x)
        self._order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

    @property
    def num_batches(self):
        return max(1, len(self.x) // self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} of {self.num_batches}")
        picked = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
        x = self.x[picked] if self.per_sample is None else (self.x[picked], self.per_sample[picked])
        return (x,) if self.y is None else (x, self.y[picked])


def orders_itself(source):
    """Whether `source` is a `PyDataset` that sets its own order per epoch (it has `set_epoch`).

    Keras must not shuffle such a source's batches: it would do so from
    Python's global random state, which a resumed process does not share.

    Example:
        >>> from keras_ssl.data.sources import orders_itself
        >>> orders_itself(keras_ssl.data.ArrayBatches(x_train))
        True
        >>> orders_itself(keras_ssl.data.to_dataset([x_train[:32], x_train[32:]]))   # a list of batches
        False
    """
    if not isinstance(source, keras.utils.PyDataset):
        return False
    while isinstance(source, _IndexedBatches):
        source = source.source
    return callable(getattr(source, "set_epoch", None))


def prepare_fit_data(
    x,
    y=None,
    batch_size=None,
    *,
    channels=None,
    value_range=None,
    min_size=None,
    check_batch=None,
    min_batch=None,
    per_sample=None,
):
    """Checks any image source for `fit` and returns what Keras should get.

    NumPy images are checked whole and cut to full batches (SSL losses are
    designed for the full batch). Every other source (`tf.data`,
    `PyDataset`, `ImageFiles`, generator, list of batches, torch
    `DataLoader` or `Dataset`) is made acceptable to Keras (`to_dataset`);
    its first batch gets the same checks, with the same messages, and every
    later batch read on the Python side gets its shape checked as it is read
    (`data.checks.BatchRules`). A list of batches is checked whole, up front.

    A batch under `min_batch` would stop the epoch at its end: where the batch sizes are known, a
    short batch is refused before training (`BatchRules.check_last`); a generator's, or a `tf.data`
    one of unknown length, is skipped with a warning that counts the images skipped.

    Args:
        x: the images, or a source of `x`, `(x,)`, `(x, y)` or dict batches.
        y: labels (or CLIP texts) with NumPy images; None with sources.
        batch_size: with arrays: Keras's batch size (default 32); with a
            torch `Dataset` or unbatched `tf.data`: the batch size to make.
        channels: required channel count.
        value_range: declared pixel range (see `check_images`).
        min_size: the view size: smaller images are an error.
        check_batch: called with the first batch's size; raises when the
            method cannot train on it.
        min_batch: fewest images any batch may have.
        per_sample: a `data.per_sample.PerSample`: batches are `(images,
            labels)` or `(images, indices)`, made the one input
            `((images, per_sample),)` (arrays: see `engine.fit.check_fit_data`).

    Returns:
        `(x, y, batch_size)` to pass to `keras.Model.fit`.

    Example:
        >>> loader = [x_train[i : i + 16] for i in range(0, 64, 16)]   # a list of batches
        >>> x, y, batch_size = keras_ssl.data.prepare_fit_data(loader, channels=3, min_size=16)
        >>> x[0][0].shape, y, batch_size
        ((16, 16, 16, 3), None, None)
        >>> keras_ssl.data.prepare_fit_data(loader, channels=3, min_size=32)
        Traceback (most recent call last):
        ...
        ValueError: images of 16x16 pixels are smaller than the 32x32 views; ...
        >>> keras_ssl.data.prepare_fit_data([x_train[:16], x_train[16:17]], min_batch=2)
        Traceback (most recent call last):
        ...
        ValueError: batch 1 has 1 image(s), fewer than the 2 the method needs in a batch; ...
    """
    if x is None:
        raise ValueError("`fit` needs training images `x`, got None.")
    checks = dict(channels=channels, value_range=value_range, min_size=min_size)
    if isinstance(x, np.ndarray):
        check_images(x, **checks)
        batch = batch_size or 32
        if check_batch is not None:
            check_batch(min(batch, len(x)))
        if y is not None and len(y) != len(x):
            raise ValueError(f"labels `y` have length {len(y)} but `x` has {len(x)} images.")
        keep = len(x) - len(x) % batch if len(x) >= batch else len(x)
        return x[:keep], (None if y is None else y[:keep]), batch_size
    if y is not None:
        raise ValueError("`y` goes with NumPy images only; a dataset yields (images, labels) batches.")
    rules = BatchRules(channels, min_size, min_batch, per_sample)
    if isinstance(x, list) and len(x) > 1:
        for i, batch in enumerate(x):  # in memory: every batch checked whole, up front
            try:
                check_images(_numpy(_select(batch)[0]), **checks)
            except ValueError as e:
                raise ValueError(f"batch {i}: {e}" if i else str(e)) from None
            rules(_select(batch), f"batch {i}" if i else None)
    source = _wrap(x, batch_size, rules)
    tf_data = _is_from(source, "tensorflow", "DatasetV2")
    source, first = _peek(source)
    if tf_data and per_sample is not None:
        first = per_sample(first)  # packed on the Python side below
    images = _numpy(first[0][0] if per_sample is not None else first[0])
    check_images(images, **checks)
    if check_batch is not None:
        check_batch(len(images))
    source = rules.check_last(source)
    if tf_data and per_sample is not None:
        source = source.map(lambda images, values: ((images, values),))
    return source, None, None


def _numpy(tensor):
    if _is_from(tensor, "torch", "Tensor"):
        return tensor.detach().cpu().numpy()
    return np.asarray(tensor)


def _peek(source):
    """`(source, first batch)`: a generator is re-chained so no batch is lost."""
    try:
        if _is_from(source, "tensorflow", "DatasetV2"):
            return source, _select(next(iter(source.take(1))))
        if isinstance(source, keras.utils.PyDataset):
            return source, _select(source[0])
        if hasattr(source, "__next__"):
            first = next(source)
            return _chain(first, source), _select(first)
        return source, _select(next(iter(source)))
    except (StopIteration, IndexError):
        raise ValueError("the dataset yields no batches: it is empty.") from None


def _chain(first, rest):
    yield first
    yield from rest
