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
or converted.
"""

import csv
import os
import threading
import warnings

import keras
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError as e:  # pragma: no cover - pillow is a dependency
        raise ImportError("reading image files needs Pillow: pip install pillow") from e
    return Image, ImageOps


def decode_image(path, size=None, channels=3):
    """Decodes one image file to uint8 `(H, W, channels)`, fixing what cameras and editors write.

    Args:
        path: image file.
        size: `(height, width)` (or an int) to which the image is resized so
            that it covers the target with its aspect kept, then centre-
            cropped; None keeps the decoded size.
        channels: 3 (RGB) or 1 (grayscale).

    Returns:
        `(array, conversion)`: the image and a short description of what was
        converted ("CMYK", "16-bit", "palette", "alpha", "EXIF-rotated",
        "grayscale", "colour"), or None when the file was plain.

    Raises:
        OSError, ValueError (and Pillow's errors): the file does not decode.

    Example:
        >>> image, note = decode_image("photo.jpg", size=96)
        >>> image.shape
        (96, 96, 3)
    """
    Image, ImageOps = _pil()
    if size is not None:
        size = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
    notes = []
    with Image.open(path) as im:
        if size is not None and im.format == "JPEG":
            # Decode at the smallest 1/2^k scale still covering the target: far
            # less work for large photos than decoding in full and shrinking.
            scale = max(size[0] / im.height, size[1] / im.width)
            im.draft(im.mode if im.mode in ("L", "RGB") else None,
                     (int(np.ceil(im.width * scale)), int(np.ceil(im.height * scale))))
        im.load()
        if im.getexif().get(0x0112, 1) != 1:
            im = ImageOps.exif_transpose(im)
            notes.append("EXIF-rotated")
        im = _eight_bit(im, channels, notes, Image)
        if size is not None and (im.height, im.width) != size:
            scale = max(size[0] / im.height, size[1] / im.width)
            resized = (max(size[1], round(im.width * scale)), max(size[0], round(im.height * scale)))
            im = im.resize(resized, Image.BILINEAR)
            left, top = (resized[0] - size[1]) // 2, (resized[1] - size[0]) // 2
            im = im.crop((left, top, left + size[1], top + size[0]))
        array = np.asarray(im, dtype="uint8")
    array = array[..., None] if array.ndim == 2 else array
    return array, (", ".join(notes) or None)


def _eight_bit(im, channels, notes, Image):
    """`im` as 8-bit "RGB" or "L", with what was converted appended to `notes`."""
    mode = im.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(im, dtype="float64")
        # 16-bit PNG/TIFF: scale 0-65535 to 0-255 (Pillow's convert would clip).
        top = 1.0 if mode == "F" and values.max() <= 1.0 else 65535.0
        im = Image.fromarray(np.clip(np.round(values * (255.0 / top)), 0, 255).astype("uint8"), "L")
        notes.append("16-bit")
    elif mode == "P":
        notes.append("palette")
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "CMYK":
        notes.append("CMYK")
        im = im.convert("RGB")
    elif mode not in ("RGB", "L", "RGBA", "LA", "1"):
        notes.append(mode)
        im = im.convert("RGBA" if "A" in mode else "RGB")
    if im.mode in ("RGBA", "LA"):
        # Transparent pixels are composited on white, as a viewer shows them.
        notes.append("alpha")
        background = Image.new(im.mode[:-1], im.size, 255 if im.mode == "LA" else (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        im = background
    if channels == 3 and im.mode != "RGB":
        if im.mode in ("L", "1"):
            notes.append("grayscale")
        im = im.convert("RGB")
    elif channels == 1 and im.mode != "L":
        if im.mode == "RGB":
            notes.append("colour")
        im = im.convert("L")
    return im


def folder_files(root):
    """Image files of a folder and their labels.

    Args:
        root: a folder with one sub-folder per class (labels are the sorted
            sub-folder names' indices; files in sub-sub-folders count for
            their class), or a flat folder of images (no labels).

    Returns:
        `(files, labels, classes, ignored)`: sorted paths, int64 labels (or
        None), class names, and the non-image files that were left out.

    Example:
        >>> files, labels, classes, _ = folder_files("pets/")
        >>> classes
        ['cat', 'dog']
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"{root} is not a folder.")
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    entries, ignored = [], []
    if classes:
        for label, name in enumerate(classes):
            for folder, dirs, names in os.walk(os.path.join(root, name)):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                entries.extend((os.path.join(folder, f), label) for f in sorted(names))
    else:
        entries = [(os.path.join(root, f), None) for f in sorted(os.listdir(root))
                   if os.path.isfile(os.path.join(root, f))]
    files, labels = [], []
    for path, label in entries:
        if os.path.basename(path).startswith("."):
            continue
        if path.lower().endswith(IMAGE_EXTENSIONS):
            files.append(path)
            labels.append(label)
        else:
            ignored.append(path)
    if not files:
        raise ValueError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root}"
            + (f" (only {len(ignored)} other file(s), e.g. {os.path.basename(ignored[0])})." if ignored else ".")
        )
    return files, (np.array(labels, "int64") if classes else None), classes, ignored


def list_files(path, root=None):
    """Image paths (and labels) from a text or CSV file list.

    Args:
        path: a `.txt` with one path per line, or a `.csv` whose first column
            is the path and optional second column an integer label or a
            class name (a header row is recognised by its first cell being
            "path", "file", "filename" or "image").
        root: folder the relative paths are under; defaults to the list's
            own folder.

    Returns:
        `(files, labels, classes)`: absolute paths, int64 labels (or None)
        and class names when labels were names (else None).

    Example:
        >>> files, labels, _ = list_files("train.csv")
    """
    path = os.fspath(path)
    root = root or os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as f:
        rows = [r for r in (csv.reader(f) if path.lower().endswith(".csv") else ([line.strip()] for line in f))
                if r and r[0].strip() and not r[0].startswith("#")]
    if rows and rows[0][0].strip().lower() in ("path", "file", "filename", "image", "filepath"):
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{path} lists no image files.")
    files = [os.path.join(root, r[0].strip()) for r in rows]
    if not all(len(r) > 1 and r[1].strip() for r in rows):
        return files, None, None
    names = [r[1].strip() for r in rows]
    if all(n.lstrip("-").isdigit() for n in names):
        return files, np.array([int(n) for n in names], "int64"), None
    classes = sorted(set(names))
    return files, np.array([classes.index(n) for n in names], "int64"), classes


class ImageFiles(keras.utils.PyDataset):
    """Batches of images streamed from files, decoded in worker threads.

    Batches are `(images,)`, or `(images, labels)` with `with_labels=True`;
    images are uint8 `(B, H, W, C)`. Memory holds the file list and the
    `max_queue_size` batches Keras prefetches, whatever the number of files.

    Args:
        files: image paths.
        labels: int labels aligned with `files`, or None.
        image_size: int or `(height, width)`: every image is resized to cover
            it (aspect kept) and centre-cropped.
        batch_size: images per batch.
        channels: 3 or 1; None: 1 if the first decodable images are all
            grayscale, else 3 (grayscale files in an RGB set are converted).
        shuffle: new file order every epoch (seeded); False keeps the order.
        drop_remainder: drop the last incomplete batch (default: with
            `shuffle`, as SSL training wants full batches).
        with_labels: yield `(images, labels)` (needs labels).
        seed: seed of the shuffle.
        workers: decoding threads (default: the CPU count, at most 8).
        use_multiprocessing: decode in processes instead of threads.
        max_queue_size: batches decoded ahead.

    Raises:
        ValueError: before any training, when there are no files or none of
            the first files decodes.

    Example:
        >>> train = ImageFiles.from_folder("photos/", image_size=96, batch_size=128)
        >>> model.fit(train, epochs=100)
    """

    PROBE = 32  # files decoded at construction to check the set and pick channels

    def __init__(self, files, labels=None, *, image_size, batch_size=128, channels=None, shuffle=True,
                 drop_remainder=None, with_labels=False, seed=0, workers=None,
                 use_multiprocessing=False, max_queue_size=10):
        super().__init__(workers=workers or min(8, os.cpu_count() or 1),
                         use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        self.files = [os.fspath(f) for f in files]
        if not self.files:
            raise ValueError("ImageFiles got no files.")
        self.labels = None if labels is None else np.asarray(labels, "int64").reshape(-1)
        if self.labels is not None and len(self.labels) != len(self.files):
            raise ValueError(f"{len(self.labels)} labels for {len(self.files)} files.")
        if with_labels and self.labels is None:
            raise ValueError("with_labels=True but the files have no labels.")
        size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
        if len(size) != 2 or min(int(s) for s in size) < 1:
            raise ValueError(f"`image_size` must be a positive int or (height, width), got {image_size}.")
        self.image_size = tuple(int(s) for s in size)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        self.shuffle = bool(shuffle)
        self.drop_remainder = self.shuffle if drop_remainder is None else bool(drop_remainder)
        self.with_labels = bool(with_labels)
        self.seed = int(seed)
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
                f"{len(self.files)} image(s) make no full batch of {self.batch_size}; "
                "pass a smaller batch_size or drop_remainder=False."
            )

    # ----------------------------------------------------------- builders
    @classmethod
    def from_folder(cls, root, **kwargs):
        """An `ImageFiles` over a folder (see `folder_files`); labels from sub-folders.

        Example:
            >>> train, test = ImageFiles.from_folder("pets/", image_size=96).split(0.1)
        """
        files, labels, classes, ignored = folder_files(root)
        if ignored:
            warnings.warn(f"{root}: left out {len(ignored)} non-image file(s): "
                          f"{_names(ignored)}.", stacklevel=2)
        stream = cls(files, labels, **kwargs)
        stream.classes = classes
        return stream

    @classmethod
    def from_list(cls, path, root=None, **kwargs):
        """An `ImageFiles` over a text/CSV list of paths (see `list_files`).

        Example:
            >>> train = ImageFiles.from_list("train.csv", image_size=224, batch_size=256)
        """
        files, labels, classes = list_files(path, root)
        stream = cls(files, labels, **kwargs)
        stream.classes = classes
        return stream

    def config(self):
        """The keyword arguments that rebuild this stream on other files."""
        return dict(image_size=self.image_size, batch_size=self.batch_size, channels=self.channels,
                    shuffle=self.shuffle, drop_remainder=self.drop_remainder,
                    with_labels=self.with_labels, seed=self.seed, workers=self.workers,
                    use_multiprocessing=self.use_multiprocessing, max_queue_size=self.max_queue_size)

    def subset(self, indices, **overrides):
        """Another `ImageFiles` over the files at `indices` (settings kept unless overridden).

        Example:
            >>> gallery = train.subset(range(2000), shuffle=False)
        """
        indices = np.asarray(indices, "int64")
        kwargs = dict(self.config(), **overrides)
        stream = type(self)([self.files[i] for i in indices],
                            None if self.labels is None else self.labels[indices], **kwargs)
        stream.classes = getattr(self, "classes", None)
        return stream

    def split(self, test_fraction, seed=0):
        """`(train, test)`: a class-stratified split; the test part keeps file order.

        Example:
            >>> train, test = stream.split(0.2)
        """
        from keras_ssl.data.datasets import test_mask

        if not 0 < test_fraction < 1:
            raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
        test = test_mask(len(self.files), self.labels, test_fraction, seed)
        return (self.subset(np.flatnonzero(~test)),
                self.subset(np.flatnonzero(test), shuffle=False, drop_remainder=False))

    def to_arrays(self):
        """All images (and labels) in file order, as NumPy arrays: for small sets only.

        Example:
            >>> x_test, y_test = test.to_arrays()
        """
        stream = self.subset(np.arange(len(self.files)), shuffle=False, drop_remainder=False,
                             with_labels=False)
        x = np.concatenate([stream[i][0] for i in range(stream.num_batches)])
        stream.report()
        self._problems.update(stream._problems)
        self._reported |= stream._reported
        return x, self.labels

    # ------------------------------------------------------------ batches
    @property
    def num_batches(self):
        n = len(self.files)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def __len__(self):
        return self.num_batches

    def __getitem__(self, index):
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} of {self.num_batches}")
        picked = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        images = [self._load(self.files[i]) for i in picked]
        good = [im for im in images if im is not None]
        images = [im if im is not None else (good[k % len(good)] if good else self._fallback)
                  for k, im in enumerate(images)]
        x = np.stack(images)
        return (x, self.labels[picked]) if self.with_labels else (x,)

    def on_epoch_end(self):
        self.report()
        self.epoch += 1
        self._order = self._permutation()

    def set_epoch(self, epoch):
        """Selects epoch `epoch`'s file order (`SSLModel.fit` calls it at each epoch start).

        Example:
            >>> stream.set_epoch(5)   # the order of the sixth epoch, in any process
        """
        self.epoch = int(epoch)
        self._order = self._permutation()

    def report(self):
        """Warns once about files skipped or converted since the last report.

        Example:
            >>> stream.report()   # also called at every epoch end
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
            parts.append(f"skipped {len(skipped)} file(s) that do not decode (each replaced in its "
                         f"batch by another image): {_names(skipped, new)}")
        if converted:
            parts.append(f"converted {len(converted)} file(s) to {self._mode()}: {_names(converted, new)}")
        warnings.warn("ImageFiles: " + "; ".join(parts) + ".", stacklevel=2)

    # ------------------------------------------------------------ helpers
    def _mode(self):
        return "8-bit RGB" if self.channels == 3 else "8-bit grayscale"

    def _permutation(self):
        if not self.shuffle:
            return np.arange(len(self.files))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.files))

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
            Image, _ = _pil()
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
                f"none of the first {len(first)} image file(s) decodes ({reasons}). "
                "Are these image files?"
            )
        return good[0]


def _names(paths, reasons=None, shown=10):
    def why(path):
        reason = reasons[path].removeprefix("skipped: ") if reasons else ""
        return f" ({reason[:80]})" if reason else ""

    named = [os.path.basename(p) + why(p) for p in paths[:shown]]
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(named) + more
