"""Image files on disk: `decode_image` (how every file is read), the file lists of a folder
(`folder_files`) or of a `.txt`/`.csv` list (`list_files`), and which files each process reads
(`process_batches`). `data.image_files.ImageFiles` streams them in batches.

Every file is decoded the same way: EXIF orientation applied, CMYK / palette /
16-bit / alpha images converted to 8-bit RGB (or L), then resized so that it
covers the target size (aspect kept) and centre-cropped to it.
"""

import csv
import os

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


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
        >>> from PIL import Image
        >>> Image.fromarray(np.zeros((24, 32, 3), "uint8")).save("photo.jpg")   # 32 wide, 24 high
        >>> image, note = keras_ssl.data.decode_image("photo.jpg", size=16)
        >>> image.shape, image.dtype, note
        ((16, 16, 3), dtype('uint8'), None)
        >>> Image.fromarray(np.zeros((24, 32), "uint8")).save("gray.png")
        >>> image, note = keras_ssl.data.decode_image("gray.png", size=16)
        >>> image.shape, note
        ((16, 16, 3), 'grayscale')
    """
    if size is not None:
        size = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
    notes = []
    with Image.open(path) as im:
        if size is not None and im.format == "JPEG":
            # Decode at the smallest 1/2^k scale still covering the target: far
            # less work for large photos than decoding in full and shrinking.
            scale = max(size[0] / im.height, size[1] / im.width)
            im.draft(
                im.mode if im.mode in ("L", "RGB") else None,
                (int(np.ceil(im.width * scale)), int(np.ceil(im.height * scale))),
            )
        im.load()
        if im.getexif().get(0x0112, 1) != 1:
            im = ImageOps.exif_transpose(im)
            notes.append("EXIF-rotated")
        im = _eight_bit(im, channels, notes)
        if size is not None and (im.height, im.width) != size:
            scale = max(size[0] / im.height, size[1] / im.width)
            resized = (max(size[1], round(im.width * scale)), max(size[0], round(im.height * scale)))
            im = im.resize(resized, Image.BILINEAR)
            left, top = (resized[0] - size[1]) // 2, (resized[1] - size[0]) // 2
            im = im.crop((left, top, left + size[1], top + size[0]))
        array = np.asarray(im, dtype="uint8")
    array = array[..., None] if array.ndim == 2 else array
    return array, (", ".join(notes) or None)


def _eight_bit(im, channels, notes):
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
        >>> from PIL import Image
        >>> for i, name in enumerate(["cat", "dog", "cat", "dog"]):
        ...     os.makedirs(f"pets/{name}", exist_ok=True)
        ...     Image.fromarray(x_small[i]).save(f"pets/{name}/{i}.png")
        >>> files, labels, classes, _ = keras_ssl.data.folder_files("pets/")
        >>> classes, labels.tolist(), [os.path.basename(f) for f in files]
        (['cat', 'dog'], [0, 0, 1, 1], ['0.png', '2.png', '1.png', '3.png'])
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
        entries = [
            (os.path.join(root, f), None) for f in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, f))
        ]
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
        >>> with open("train.csv", "w") as f:
        ...     print("path,label", "cats/1.jpg,cat", "dogs/2.jpg,dog", sep="\\n", file=f)
        >>> files, labels, classes = keras_ssl.data.list_files("train.csv")
        >>> [os.path.relpath(f) for f in files], labels.tolist(), classes
        (['cats/1.jpg', 'dogs/2.jpg'], [0, 1], ['cat', 'dog'])
    """
    path = os.fspath(path)
    root = root or os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as f:
        rows = [
            r
            for r in (csv.reader(f) if path.lower().endswith(".csv") else ([line.strip()] for line in f))
            if r and r[0].strip() and not r[0].startswith("#")
        ]
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


def process_batches(order, batch_size, index=0, count=1, drop_remainder=True):
    """The positions process `index` of `count` reads, batch after batch, from an epoch's global `order`.

    Global batch `t` is `order[t * G:(t + 1) * G]` with `G = batch_size * count`,
    and process `p` reads its `p`-th block of `batch_size` positions (the layout
    of `distribute.process_shard`): the processes' batches, concatenated in
    process order, are one process's batches of `G`. Every process gets the
    same number of full batches, or collectives would wait for ever. With
    `drop_remainder` the last incomplete global batch is left out, so no
    position is read twice; without it one process keeps its incomplete last
    batch, and several pad it with the first positions of `order` (the only
    ones read twice), since the processes' batches must have equal shapes.

    Args:
        order: the epoch's order of every position (the same on every process).
        batch_size: positions per batch of one process.
        index, count: this process and the number of processes.
        drop_remainder: leave out the last incomplete global batch.

    Returns:
        int64 array of this process's positions, its batches one after another.

    Example:
        >>> from keras_ssl.data.files import process_batches
        >>> order = np.arange(10)   # global batches of 2 * 2: [0 1 2 3] [4 5 6 7], then 8, 9 left out
        >>> process_batches(order, 2, 0, 2).tolist(), process_batches(order, 2, 1, 2).tolist()
        ([0, 1, 4, 5], [2, 3, 6, 7])
        >>> process_batches(order, 2, 1, 2, drop_remainder=False).tolist()   # a third global batch [8 9 0 1]
        [2, 3, 6, 7, 0, 1]
    """
    batch_size, index, count = int(batch_size), int(index), int(count)
    if batch_size < 1 or count < 1 or not 0 <= index < count:
        raise ValueError(f"need batch_size >= 1 and 0 <= index < count, got {batch_size}, {index}, {count}.")
    order, size = np.asarray(order, "int64").reshape(-1), batch_size * count
    steps = len(order) // size if drop_remainder else -(-len(order) // size)
    if count == 1:
        return order if not drop_remainder else order[: steps * size]
    if steps * size > len(order):
        order = np.concatenate([order, np.resize(order, steps * size - len(order))])  # np.resize repeats
    return order[: steps * size].reshape(steps, count, batch_size)[:, index].reshape(-1)


def _names(paths, reasons=None, shown=10):
    """`paths`' file names (with `reasons[path]`, if given), the first `shown` of them, for a warning."""

    def why(path):
        reason = reasons[path].removeprefix("skipped: ") if reasons else ""
        return f" ({reason[:80]})" if reason else ""

    named = [os.path.basename(p) + why(p) for p in paths[:shown]]
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(named) + more


def _shard(shard):
    """`shard` checked: `(index, count)` as ints."""
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"`shard` must be None, False or (index, count), got {shard!r}.") from None
    if not 0 <= index < count:
        raise ValueError(f"`shard` (index, count) needs 0 <= index < count, got {shard!r}.")
    return index, count
