"""Streaming image files: decode, resize and batch in worker threads.

`ImageFiles` is a `keras.utils.PyDataset`: Keras's own enqueuer runs
`__getitem__` in a pool of worker threads and keeps `max_queue_size`
batches ready, so the dataset is never held in memory and nothing here
writes a thread pool or queue. Pillow releases the GIL while it decodes
and resizes, so threads run in parallel; on 2 cores they beat processes
(no pickling of batches) and match `tf.data` with the same decoder (see
`benchmarks/input_pipeline.py`). Per-sample augmentation stays inside the
compiled training step.

Every file is decoded the same way (`decode_image`): EXIF orientation
applied, CMYK / palette / 16-bit / alpha images converted to 8-bit RGB (or
L), then resized so that it covers the target size (aspect kept) and
centre-cropped to it. A file that cannot be decoded is replaced in its
batch by another image of the batch, so every step keeps its full batch;
each epoch ends with one warning that counts and names the files skipped
or converted. With several processes each reads its own share of every
global batch (`shard`), so no file is read twice in an epoch.
"""

import os
import threading
import warnings

import keras
import numpy as np
from PIL import Image

from keras_ssl.backend.replication import input_shard
from keras_ssl.data.files import _GRAY_MODES, _names, _shard, decode_image, folder_files, list_files, process_batches
from keras_ssl.data.splits import test_mask


class ImageFiles(keras.utils.PyDataset):
    """Batches of images streamed from files, decoded in worker threads.

    Batches are `(images,)`, `(images, labels)` with `with_labels=True`, or
    `(images, indices)` with `with_indices=True` (each file's position in
    `files`, int32, the same every epoch whatever the shuffle: the per-sample
    key of DeepCluster v2); images are uint8 `(B, H, W, C)`. Memory holds the
    file list and the `max_queue_size` batches Keras prefetches, whatever the
    number of files.

    Args:
        files: image paths.
        labels: int labels aligned with `files`, or None.
        image_size: int or `(height, width)`: every image is resized to cover
            it (aspect kept) and centre-cropped.
        batch_size: images per batch.
        channels: 3 or 1; None: 1 if the first decodable images are all
            grayscale, else 3 (grayscale files in an RGB set are converted).
        shuffle: new file order every epoch (seeded); False keeps the order.
        drop_remainder: drop the last incomplete (global) batch (default:
            with `shuffle`, as SSL training wants full batches). Without it,
            several processes pad their last batch with the epoch's first
            files (`data.files.process_batches`).
        with_labels: yield `(images, labels)` (needs labels; from a folder:
            the sorted class sub-folder names' indices).
        with_indices: yield `(images, indices)` instead.
        seed: seed of the shuffle: each epoch's order is one permutation of
            every file, the same on every process, then split.
        shard: `(index, count)`: read process `index`'s `batch_size` files of
            every global batch of `batch_size * count` (the processes'
            batches, concatenated, are one process's batches of that size);
            False: read every file; None: this process's share when several
            feed their own rows (JAX, PyTorch; TensorFlow's strategy splits
            the input itself: `backend.replication.input_shard`). Create the stream
            after `distribute.initialize()`.
        workers: decoding threads (default: the CPU count, at most 8).
        use_multiprocessing: decode in processes instead of threads.
        max_queue_size: batches decoded ahead.

    Raises:
        ValueError: before any training, when there are no files or none of
            the first files decodes.

    Example:
        >>> from PIL import Image
        >>> for i, (image, label) in enumerate(zip(x_train, y_train)):
        ...     os.makedirs(f"photos/{label}", exist_ok=True)
        ...     Image.fromarray(image).save(f"photos/{label}/{i}.png")
        >>> train = keras_ssl.data.ImageFiles.from_folder("photos/", image_size=16, batch_size=16)
        >>> len(train), train.classes, train[0][0].shape, train[0][0].dtype
        (4, ['0', '1', '2', '3'], (16, 16, 16, 3), dtype('uint8'))
        >>> model = keras_ssl.SimCLR(encoder, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer="adam")
        >>> history = model.fit(train, epochs=1, verbose=0)
    """

    PROBE = 32  # files decoded at construction to check the set and pick channels

    def __init__(
        self,
        files,
        labels=None,
        *,
        image_size,
        batch_size=128,
        channels=None,
        shuffle=True,
        drop_remainder=None,
        with_labels=False,
        with_indices=False,
        seed=0,
        shard=None,
        workers=None,
        use_multiprocessing=False,
        max_queue_size=10,
    ):
        super().__init__(
            workers=workers or min(8, os.cpu_count() or 1),
            use_multiprocessing=use_multiprocessing,
            max_queue_size=max_queue_size,
        )
        self.files = [os.fspath(f) for f in files]
        if not self.files:
            raise ValueError("ImageFiles got no files.")
        self.labels = None if labels is None else np.asarray(labels, "int64").reshape(-1)
        if self.labels is not None and len(self.labels) != len(self.files):
            raise ValueError(f"{len(self.labels)} labels for {len(self.files)} files.")
        if with_labels and self.labels is None:
            raise ValueError("with_labels=True but the files have no labels.")
        if with_labels and with_indices:
            raise ValueError("pass with_labels=True or with_indices=True, not both: a batch carries one of them.")
        size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
        if len(size) != 2 or min(int(s) for s in size) < 1:
            raise ValueError(f"`image_size` must be a positive int or (height, width), got {image_size}.")
        self.image_size = tuple(int(s) for s in size)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        self.shuffle = bool(shuffle)
        self.drop_remainder = self.shuffle if drop_remainder is None else bool(drop_remainder)
        self.with_labels, self.with_indices = bool(with_labels), bool(with_indices)
        self.seed = int(seed)
        self.shard = _shard(input_shard() if shard is None else (0, 1) if shard is False else shard)
        self.epoch = 0
        self._order = self._permutation()
        self._lock = threading.Lock()
        self._problems = {}  # path -> reason, skipped or converted
        self._reported = set()
        self._bad = set()
        self.channels = None if channels is None else int(channels)
        if self.channels not in (None, 1, 3):
            raise ValueError(f"`channels` must be 1 or 3, got {channels}.")
        self._fallback = self._probe()
        if self.num_batches == 0:
            raise ValueError(
                f"{len(self.files)} image(s) make no full batch of {self.batch_size * self.shard[1]} "
                f"({self.shard[1]} process(es) x {self.batch_size}); pass a smaller batch_size or drop_remainder=False."
            )

    # ----------------------------------------------------------- builders
    @classmethod
    def from_folder(cls, root, **kwargs):
        """An `ImageFiles` over a folder (see `folder_files`); labels from sub-folders.

        Example:
            >>> from PIL import Image
            >>> for i, (image, label) in enumerate(zip(x_train, ["cat", "dog"] * 32)):
            ...     os.makedirs(f"pets/{label}", exist_ok=True)
            ...     Image.fromarray(image).save(f"pets/{label}/{i}.png")
            >>> pets = keras_ssl.data.ImageFiles.from_folder("pets/", image_size=16, batch_size=16)
            >>> train, test = pets.split(0.25)
            >>> pets.classes, len(train.files), len(test.files)
            (['cat', 'dog'], 48, 16)
        """
        files, labels, classes, ignored = folder_files(root)
        if ignored:
            warnings.warn(f"{root}: left out {len(ignored)} non-image file(s): {_names(ignored)}.", stacklevel=2)
        stream = cls(files, labels, **kwargs)
        stream.classes = classes
        return stream

    @classmethod
    def from_list(cls, path, root=None, **kwargs):
        """An `ImageFiles` over a text/CSV list of paths (see `list_files`).

        Example:
            >>> from PIL import Image
            >>> for i, image in enumerate(x_train): Image.fromarray(image).save(f"{i}.png")
            >>> with open("train.csv", "w") as f:
            ...     print("path,label", *(f"{i}.png,{y}" for i, y in enumerate(y_train)), sep="\\n", file=f)
            >>> train = keras_ssl.data.ImageFiles.from_list("train.csv", image_size=16, batch_size=16)
            >>> len(train), train.labels[:6].tolist()
            (4, [0, 1, 2, 3, 0, 1])
        """
        files, labels, classes = list_files(path, root)
        stream = cls(files, labels, **kwargs)
        stream.classes = classes
        return stream

    def config(self):
        """The keyword arguments that rebuild this stream on other files."""
        return dict(
            image_size=self.image_size,
            batch_size=self.batch_size,
            channels=self.channels,
            shuffle=self.shuffle,
            drop_remainder=self.drop_remainder,
            with_labels=self.with_labels,
            with_indices=self.with_indices,
            seed=self.seed,
            shard=self.shard,
            workers=self.workers,
            use_multiprocessing=self.use_multiprocessing,
            max_queue_size=self.max_queue_size,
        )

    def subset(self, indices, **overrides):
        """Another `ImageFiles` over the files at `indices` (settings kept unless overridden).

        Example:
            >>> from PIL import Image
            >>> files = [f"{i}.png" for i in range(len(x_train))]
            >>> for path, image in zip(files, x_train): Image.fromarray(image).save(path)
            >>> train = keras_ssl.data.ImageFiles(files, y_train, image_size=16, batch_size=16)
            >>> gallery = train.subset(range(20), shuffle=False, drop_remainder=False)
            >>> len(gallery.files), len(gallery), gallery.labels[:6].tolist()
            (20, 2, [0, 1, 2, 3, 0, 1])
        """
        indices = np.asarray(indices, "int64")
        kwargs = dict(self.config(), **overrides)
        stream = type(self)(
            [self.files[i] for i in indices], None if self.labels is None else self.labels[indices], **kwargs
        )
        stream.classes = getattr(self, "classes", None)
        return stream

    def split(self, test_fraction, seed=0):
        """`(train, test)`: a class-stratified split; the test part keeps file order.

        Example:
            >>> from PIL import Image
            >>> files = [f"{i}.png" for i in range(len(x_train))]
            >>> for path, image in zip(files, x_train): Image.fromarray(image).save(path)
            >>> stream = keras_ssl.data.ImageFiles(files, y_train, image_size=16, batch_size=16)
            >>> train, test = stream.split(0.25)
            >>> len(train.files), len(test.files), np.bincount(test.labels).tolist(), test.shuffle
            (48, 16, [4, 4, 4, 4], False)
        """
        if not 0 < test_fraction < 1:
            raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
        test = test_mask(len(self.files), self.labels, test_fraction, seed)
        return (
            self.subset(np.flatnonzero(~test)),
            self.subset(np.flatnonzero(test), shuffle=False, drop_remainder=False),
        )

    def to_arrays(self):
        """All images (and labels) in file order, as NumPy arrays: for small sets only.

        Example:
            >>> from PIL import Image
            >>> files = [f"{i}.png" for i in range(len(x_train))]
            >>> for path, image in zip(files, x_train): Image.fromarray(image).save(path)
            >>> stream = keras_ssl.data.ImageFiles(files, y_train, image_size=16, batch_size=16)
            >>> x, y = stream.to_arrays()
            >>> x.shape, np.array_equal(x, x_train), np.array_equal(y, y_train)
            ((64, 16, 16, 3), True, True)
        """
        every = dict(shuffle=False, drop_remainder=False, with_labels=False, with_indices=False, shard=False)
        stream = self.subset(np.arange(len(self.files)), **every)
        x = np.concatenate([stream[i][0] for i in range(stream.num_batches)])
        stream.report()
        self._problems.update(stream._problems)
        self._reported |= stream._reported
        return x, self.labels

    # ------------------------------------------------------------ batches
    @property
    def num_batches(self):
        return -(-len(self._order) // self.batch_size)  # this process's positions: full batches but maybe the last

    def __len__(self):
        return self.num_batches

    def __getitem__(self, index):
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} of {self.num_batches}")
        picked = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        images = [self._load(self.files[i]) for i in picked]
        good = [im for im in images if im is not None]
        images = [
            im if im is not None else (good[k % len(good)] if good else self._fallback) for k, im in enumerate(images)
        ]
        x = np.stack(images)
        if self.with_indices:
            return x, picked.astype("int32")
        return (x, self.labels[picked]) if self.with_labels else (x,)

    def on_epoch_end(self):
        self.report()
        self.epoch += 1
        self._order = self._permutation()

    def set_epoch(self, epoch):
        """Selects epoch `epoch`'s file order (`SSLModel.fit` calls it at each epoch start).

        Example:
            >>> from PIL import Image
            >>> files = [f"{i}.png" for i in range(len(x_train))]
            >>> for path, image in zip(files, x_train): Image.fromarray(image).save(path)
            >>> stream = keras_ssl.data.ImageFiles(files, image_size=16, batch_size=16, seed=0)
            >>> stream.set_epoch(5)   # the order of the sixth epoch, in any process
            >>> again = keras_ssl.data.ImageFiles(files, image_size=16, batch_size=16, seed=0)
            >>> again.set_epoch(5)
            >>> np.array_equal(stream[0][0], again[0][0])
            True
        """
        self.epoch = int(epoch)
        self._order = self._permutation()

    def report(self):
        """Warns once about files skipped or converted since the last report.

        Example:
            >>> from PIL import Image
            >>> files = [f"{i}.png" for i in range(len(x_train))]
            >>> for path, image in zip(files, x_train): Image.fromarray(image).save(path)
            >>> with open("broken.png", "w") as f:
            ...     _ = f.write("not an image")
            >>> stream = keras_ssl.data.ImageFiles(["broken.png", *files], image_size=16, batch_size=16)
            >>> import warnings
            >>> with warnings.catch_warnings(record=True) as caught:
            ...     warnings.simplefilter("always")
            ...     stream.report()   # also called at every epoch end
            >>> print(caught[0].message)
            ImageFiles: skipped 1 file(s) that do not decode (each replaced in its batch by another image): broken.png (...).
        """
        with self._lock:
            new = {p: r for p, r in self._problems.items() if p not in self._reported}
            self._reported |= set(new)
        if not new:
            return
        skipped = [p for p, r in new.items() if r.startswith("skipped")]
        converted = [p for p in new if p not in skipped]
        parts = []
        if skipped:
            parts.append(
                f"skipped {len(skipped)} file(s) that do not decode (each replaced in its "
                f"batch by another image): {_names(skipped, new)}"
            )
        if converted:
            parts.append(f"converted {len(converted)} file(s) to {self._mode()}: {_names(converted, new)}")
        warnings.warn("ImageFiles: " + "; ".join(parts) + ".", stacklevel=2)

    # ------------------------------------------------------------ helpers
    def _mode(self):
        return "8-bit RGB" if self.channels == 3 else "8-bit grayscale"

    def _permutation(self):
        n = len(self.files)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        return process_batches(order, self.batch_size, *self.shard, drop_remainder=self.drop_remainder)

    def _load(self, path):
        if path in self._bad:
            return None
        try:
            image, note = decode_image(path, self.image_size, self.channels)
        except Exception as e:  # Pillow raises many types for corrupt files
            with self._lock:
                self._bad.add(path)
                self._problems[path] = f"skipped: {type(e).__name__}: {e}"
            return None
        if note and note != "EXIF-rotated":
            with self._lock:
                self._problems.setdefault(path, note)
        return image

    def _probe(self):
        """Decodes the first files: errors before training, picks `channels`."""
        first = self.files[: self.PROBE]
        if self.channels is None:
            modes = []
            for path in first:
                try:
                    with Image.open(path) as im:
                        modes.append(im.mode)
                except Exception:
                    continue
            self.channels = 1 if modes and all(m in _GRAY_MODES for m in modes) else 3
        decoded = [self._load(path) for path in first]
        good = [im for im in decoded if im is not None]
        if not good:
            reasons = "; ".join(f"{os.path.basename(p)}: {self._problems[p][9:]}" for p in first[:3])
            raise ValueError(
                f"none of the first {len(first)} image file(s) decodes ({reasons}). Are these image files?"
            )
        return good[0]
