"""Image data for `fit`: in-memory datasets, streamed files, any batch source.

- `load(source)`: a named dataset, an `.npz` file or a small image folder,
  as NumPy arrays `(x_train, y_train), (x_test, y_test)`.
- `ImageFiles`: a folder or file list streamed in batches (decoded and
  resized in worker threads, never held in memory).
- `to_dataset(data)`: makes any batch source acceptable to `model.fit`.
- `prepare_fit_data(x, ...)`: the checks every source gets before `fit`
  (the first batch whole, every later batch's shape as it is read).
- `per_sample`: labels (SupCon) or dataset indices (DeepCluster v2) that
  travel with the images: `PerSample`, `check_labels`, `check_indices`.
- `check_images(x)`: rejects bad image batches with a message saying why
  (`check_image_shape`: the same checks of the shape alone).
- `to_unit_float(x)`: images as float32 in [0, 1].

Nothing here imports TensorFlow or PyTorch: their objects are recognised by
duck typing, so `keras_ssl` imports on any backend with or without them.
"""

from keras_ssl.data.checks import (
    FixableError,
    check_image_shape,
    check_images,
    check_value_range,
    looks_channels_first,
    to_unit_float,
)
from keras_ssl.data.datasets import (
    KERAS_DATASETS,
    NAMES,
    _resize_bilinear,
    load,
    resize_images,
    scattered_digits,
)
from keras_ssl.data.files import (
    IMAGE_EXTENSIONS,
    decode_image,
    folder_files,
    list_files,
)
from keras_ssl.data.image_files import ImageFiles
from keras_ssl.data.per_sample import PerSample, check_indices, check_labels
from keras_ssl.data.sources import ArrayBatches, orders_itself, prepare_fit_data, to_dataset
from keras_ssl.data.splits import pick_per_class, split, test_mask

__all__ = [
    "FixableError",
    "ArrayBatches",
    "ImageFiles",
    "PerSample",
    "check_image_shape",
    "check_images",
    "check_indices",
    "check_labels",
    "check_value_range",
    "decode_image",
    "folder_files",
    "list_files",
    "load",
    "looks_channels_first",
    "orders_itself",
    "resize_images",
    "pick_per_class",
    "scattered_digits",
    "prepare_fit_data",
    "to_dataset",
    "to_unit_float",
    "IMAGE_EXTENSIONS",
    "KERAS_DATASETS",
    "NAMES",
    "_resize_bilinear",
    "split",
    "test_mask",
]
