"""Per-sample inputs (labels, indices) from every source through one path; streamed folders give them.

References: the labels and indices are the ones the test itself attached to
each image (or, for `ImageFiles`, the file an index names, decoded apart);
nothing is compared with a value the library computed.
"""

import json
import os

import keras
import numpy as np
import pytest
from conftest import BACKEND, random_images, small_encoder

import keras_ssl
from keras_ssl import cli, data
from keras_ssl.engine.fit import check_fit_data, fit_arguments
from keras_ssl.methods import METHODS

Image = pytest.importorskip("PIL.Image")

X = random_images(16)
LABELS = np.array([0, 1, 2, 0, 1, 2, 3, 3, -1, 0, 1, 2, 3, -1, 1, 2])


def supcon():
    return keras_ssl.SupCon(small_encoder(), hidden_dim=16, projection_dim=8, seed=1)


def deepcluster():
    return keras_ssl.DeepClusterV2(
        small_encoder((None, None, 3)),
        input_shape=(16, 16, 3),
        num_samples=16,
        num_prototypes=(4,),
        projection_dim=8,
        hidden_dim=16,
        views=keras_ssl.views.multi_crop_views(16, local_size=8, num_local=2, seed=3),
        seed=1,
    )


class Batches(keras.utils.PyDataset):
    def __init__(self, parts):
        super().__init__()
        self.parts = parts

    def __len__(self):
        return len(self.parts)

    def __getitem__(self, i):
        return self.parts[i]


def sources(values):
    """The 16 images with their per-sample `values`, as each kind of source, in two batches of 8."""
    parts = [(X[:8], values[:8]), (X[8:], values[8:])]
    made = {"list": lambda: list(parts), "generator": lambda: iter(parts), "pydataset": lambda: Batches(parts)}
    if BACKEND == "tensorflow":
        import tensorflow as tf

        made["tf.data"] = lambda: tf.data.Dataset.from_tensor_slices((X, values)).batch(8)
    if BACKEND == "torch":
        import torch

        pairs = torch.utils.data.TensorDataset(torch.from_numpy(X), torch.from_numpy(values))
        made["torch"] = lambda: torch.utils.data.DataLoader(pairs, batch_size=8)
    return made


def read(source):
    """Every `((images, values),)` batch of a checked source, as NumPy, in order."""
    if isinstance(source, keras.utils.PyDataset):
        batches = [source[i] for i in range(source.num_batches)]
    else:
        batches = source if hasattr(source, "__next__") else iter(source)
    out = [[keras.ops.convert_to_numpy(a) for a in batch[0]] for batch in batches]
    return np.concatenate([b[0] for b in out]), np.concatenate([b[1] for b in out])


@pytest.mark.parametrize("make, values", [(supcon, LABELS), (deepcluster, np.arange(16)[::-1].copy())])
def test_every_source_gives_the_values_it_was_given_packed_with_their_images(make, values):
    model = make()
    for name, source in sources(values).items():
        checked, y, batch_size = check_fit_data(model, source(), None, None)
        images, got = read(checked)
        np.testing.assert_array_equal(images, X, err_msg=name)
        np.testing.assert_array_equal(got, values, err_msg=name)
    # NumPy images: the same single input, in the seeded order of ArrayBatches.
    y = LABELS if model.needs_labels else None
    batches = fit_arguments(model, X, y, 8, {})[0]
    ((images, got),) = batches[1]
    rows = [int(np.flatnonzero((X == image).all(axis=(1, 2, 3)))[0]) for image in images]
    np.testing.assert_array_equal(got, LABELS[rows] if model.needs_labels else rows)


@pytest.mark.parametrize(
    "make, bad, message",
    [
        (supcon, LABELS + 0.5, "labels must be integers"),
        (supcon, LABELS - 2, ">= -1"),
        (deepcluster, np.arange(16) + 8, r"range over \[16, 23\]"),
    ],
)
def test_a_bad_value_in_a_later_batch_is_refused_where_it_is_read(make, bad, message):
    """The first batch is good; the second's labels or indices are wrong: refused as that batch is read."""
    model = make()
    good = LABELS if model.needs_labels else np.arange(16)
    parts = [(X[:8], good[:8]), (X[8:], bad[8:])]
    checked, _, _ = check_fit_data(model, Batches([parts[0], parts[1], parts[0]]), None, None)
    checked[2]
    with pytest.raises(ValueError, match=message):
        checked[1]
    with pytest.raises(ValueError, match=message):  # a list is in memory: refused up front
        check_fit_data(model, list(parts), None, None)


def write_folder(root, count=24, size=16):
    """`count` PNGs in two class folders; image i is `random_images(count)[i]` (PNG: read back exactly)."""
    images = random_images(count, size, seed=7)
    paths = []
    for i, image in enumerate(images):
        folder = os.path.join(root, "ab"[i % 2])
        os.makedirs(folder, exist_ok=True)
        paths.append(os.path.join(folder, f"{i:03d}.png"))
        Image.fromarray(image).save(paths[-1])
    return images, paths


def test_image_files_indices_name_their_files_in_every_shuffled_epoch(tmp_path):
    _, paths = write_folder(str(tmp_path))
    stream = data.ImageFiles(paths, image_size=16, batch_size=8, with_indices=True, seed=2, workers=1)
    orders = []
    for epoch in range(2):
        stream.set_epoch(epoch)
        seen = []
        for b in range(stream.num_batches):
            images, indices = stream[b]
            assert indices.dtype == np.int32
            for image, index in zip(images, indices):
                # Independent of the stream: the file the index names, decoded by Pillow itself.
                np.testing.assert_array_equal(image, np.asarray(Image.open(paths[index]).convert("RGB")))
            seen.extend(indices.tolist())
        assert sorted(seen) == list(range(len(paths)))
        orders.append(seen)
    assert orders[0] != orders[1]  # the order was shuffled, the indices followed their files
    with pytest.raises(ValueError, match="not both"):
        data.ImageFiles(paths, np.zeros(len(paths), "int64"), image_size=16, with_labels=True, with_indices=True)


# The CLI's wiring does not depend on the backend: each method runs on one backend in turn.
_CLI = {"torch": "deepclusterv2", "tensorflow": "supcon", "jax": "supcon"}


@pytest.mark.slow
def test_the_cli_pretrains_a_per_sample_method_on_a_streamed_folder(tmp_path):
    name = _CLI[BACKEND]
    write_folder(str(tmp_path / "photos"), count=20)
    out = str(tmp_path / "run")
    code = cli.main(
        ["pretrain", "--method", name, "--data", str(tmp_path / "photos"), "--image-size", "16",
         "--batch-size", "8", "--epochs", "1", "--width", "0.25", "--knn-every", "0", "--no-plots",
         "--verbose", "0", "--output", out]
    )  # fmt: skip
    assert code == 0
    with open(os.path.join(out, "history.json")) as f:
        assert len(json.load(f)["loss"]) == 1
    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    assert isinstance(model, METHODS[name])
    # 20 files: 4 held out for kNN (20 %), 16 trained on in 2 full batches.
    assert int(keras.ops.convert_to_numpy(model.step)) == 2
    if name == "deepclusterv2":
        assert model.num_samples == 16
        # Every training file's row of the bank was written in the epoch: none keeps its random start.
        fresh = deepcluster_bank_start(model)
        assert not np.isclose(keras.ops.convert_to_numpy(model.memory.bank), fresh).all(axis=-1).any()


def deepcluster_bank_start(model):
    """The bank a new model with the run's settings starts from (same seed: same random rows)."""
    config = model.get_config()
    return keras.ops.convert_to_numpy(type(model).from_config(config).memory.bank)
