"""Dataset loading, input checks and conversion of batch sources for `fit`."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND, data_dir, random_images

from keras_ssl import data


# ------------------------------------------------------------------ load
def test_digits_shapes_split_and_stratification():
    (x_train, y_train), (x_test, y_test) = data.load("digits")
    assert x_train.shape == (1438, 32, 32, 1) and x_test.shape == (359, 32, 32, 1)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert x_train.max() == 255 and x_train.min() == 0
    from sklearn.datasets import load_digits

    per_class = np.bincount(load_digits().target)
    np.testing.assert_array_equal(np.bincount(y_test), np.round(0.2 * per_class))
    np.testing.assert_array_equal(np.bincount(y_train) + np.bincount(y_test), per_class)
    (x_again, _), _ = data.load("digits")
    np.testing.assert_array_equal(x_train, x_again)


def test_bilinear_resize_matches_keras():
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1))
    want = keras.ops.convert_to_numpy(
        keras.ops.image.resize(x.astype("float32"), (32, 32), "bilinear", antialias=False)
    )
    np.testing.assert_allclose(data._resize_bilinear(x, (32, 32)), want, atol=1e-3)


def test_npz_round_trip(tmp_path):
    x, xt = random_images(10, 8), random_images(4, 8, seed=1)
    path = str(tmp_path / "set.npz")
    np.savez(path, x_train=x, y_train=np.arange(10, dtype="uint8"), x_test=xt, y_test=np.arange(4))
    (a, b), (c, d) = data.load(path)
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(c, xt)
    np.testing.assert_array_equal(b, np.arange(10))
    assert b.dtype == d.dtype == np.int64


def test_npz_with_only_unlabeled_grayscale_images_is_split(tmp_path):
    x = random_images(10, 8, channels=1)[..., 0]  # (N, H, W): gets a channel axis
    path = str(tmp_path / "unlabeled.npz")
    np.savez(path, x_train=x)
    (a, b), (c, d) = data.load(path, test_fraction=0.3)
    assert b is None and d is None
    assert a.shape == (7, 8, 8, 1) and c.shape == (3, 8, 8, 1)
    merged = {bytes(i) for i in np.concatenate([a, c])}
    assert merged == {bytes(i[..., None]) for i in x}


def test_named_dataset_is_read_from_data_dir(tmp_path, monkeypatch):
    x = random_images(6, 4)
    np.savez(
        tmp_path / "cifar10.npz",
        x_train=x,
        y_train=np.arange(6).reshape(6, 1),
        x_test=x[:2],
        y_test=np.arange(2).reshape(2, 1),
    )
    (a, b), (_, d) = data.load("cifar10", data_dir=str(tmp_path))
    np.testing.assert_array_equal(a, x)
    assert b.shape == (6,) and d.shape == (2,)  # keras-style (N, 1) labels flattened
    monkeypatch.setenv("KERAS_SSL_DATA_DIR", str(tmp_path))
    np.testing.assert_array_equal(data.load("cifar10")[0][0], x)


@pytest.mark.skipif(data_dir() is None, reason="KERAS_SSL_DATA_DIR not set")
def test_shared_datasets():
    (x, y), (xt, yt) = data.load("mnist")
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
    if os.path.exists(os.path.join(data_dir(), "cifar10.npz")):
        (x, y), (xt, yt) = data.load("cifar10")  # LZMA: ~8 s to decompress
        assert x.shape == (50000, 32, 32, 3) and x.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(yt), [1000] * 10)


def write_png(path, array):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    pytest.importorskip("PIL")
    images = {}
    for label, name, count in ((1, "dog", 2), (0, "cat", 3)):
        for i in range(count):
            array = np.full((6, 5, 3), 40 * i + 100 * label, "uint8")
            write_png(str(tmp_path / name / f"{i}.png"), array)
            images[bytes(array)] = label
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (x, y), (xt, yt) = data.load(str(tmp_path), test_fraction=0.4)
    assert x.shape == (3, 6, 5, 3) and xt.shape == (2, 6, 5, 3)
    np.testing.assert_array_equal(np.bincount(yt), [1, 1])
    got = {bytes(a): int(label) for a, label in zip(np.concatenate([x, xt]), np.concatenate([y, yt]))}
    assert got == images  # labels by sorted folder name: cat 0, dog 1

    (x, _), _ = data.load(str(tmp_path), image_size=4, test_fraction=0.0)
    assert x.shape == (5, 4, 4, 3)


def test_flat_grayscale_folder_has_no_labels(tmp_path):
    pytest.importorskip("PIL")
    for i in range(5):
        write_png(str(tmp_path / f"{i}.png"), np.full((4, 4), i, "uint8"))
    (x, y), (xt, yt) = data.load(str(tmp_path))
    assert y is None and yt is None
    assert x.shape == (4, 4, 4, 1) and xt.shape == (1, 4, 4, 1)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="cifar10.*digits"):
        data.load("imagenet-21k")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load(str(tmp_path / "missing.npz"))
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ValueError, match="broken.npz"):
        data.load(str(bad))
    np.savez_compressed(tmp_path / "whole.npz", x_train=random_images(64, 16))
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:-300])
    with pytest.raises(ValueError, match="truncated.npz"):
        data.load(str(tmp_path / "truncated.npz"))
    corrupt = bytearray((tmp_path / "whole.npz").read_bytes())
    corrupt[200:2000] = bytes(b ^ 0x55 for b in corrupt[200:2000])  # zip directory intact
    (tmp_path / "corrupt.npz").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="corrupt.npz"):
        data.load(str(tmp_path / "corrupt.npz"))
    np.savez(tmp_path / "nokey.npz", images=np.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match="x_train"):
        data.load(str(tmp_path / "nokey.npz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        data.load(str(tmp_path / "empty"))


# ------------------------------------------------------------------ checks
@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (np.zeros((4, 8, 8), "uint8"), {}, "rank 4"),
        (np.zeros((4, 8, 8, 1), "uint8"), {"channels": 3}, "3 channel"),
        (np.zeros((0, 8, 8, 3), "uint8"), {}, "empty"),
        (np.zeros((2, 8, 8, 3), "uint8"), {"min_batch": 4}, "at least 4"),
        (np.zeros((4, 8, 8, 3), "int64"), {}, r"int64 need value_range=\(0, 255\)"),
        (np.full((4, 8, 8, 3), 200.0, "float32"), {}, r"value_range=\(0, 255\)"),
        (np.full((4, 8, 8, 3), 300.0), {"value_range": (0, 255)}, "outside"),
        (np.zeros((4, 8, 8, 3), bool), {}, "dtype"),
        (np.zeros((4, 8, 8, 3)), {"value_range": (1, 0)}, "low < high"),
    ],
)
def test_check_images_rejects(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.check_images(x, **kwargs)


def test_check_images_counts_nan_and_inf():
    x = np.zeros((2, 4, 4, 1), "float32")
    x[0, 0, 0, 0], x[1, 1, 1, 0] = np.nan, np.inf
    with pytest.raises(ValueError, match="2 NaN or Inf"):
        data.check_images(x)


def test_check_images_returns_the_range():
    assert data.check_images(np.zeros((1, 2, 2, 3), "uint8"), channels=3) == (0.0, 255.0)
    assert data.check_images(np.ones((1, 2, 2, 3), "float32")) == (0.0, 1.0)
    assert data.check_images(np.full((1, 2, 2, 1), 9, "int16"), value_range=(0, 10)) == (0.0, 10.0)


def test_to_unit_float():
    np.testing.assert_allclose(data.to_unit_float(np.array([0, 51, 255], "uint8")), [0, 0.2, 1])
    x = np.array([0.5], "float64")
    assert data.to_unit_float(x).dtype == np.float32
    np.testing.assert_allclose(data.to_unit_float(np.array([-1, 3], "int16"), (-1, 3)), [0, 1])
    with pytest.raises(ValueError, match="value_range"):
        data.to_unit_float(np.array([1], "int32"))


# ------------------------------------------------------------------ to_dataset
X = random_images(12, 4, channels=1)


def encoder():
    return keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten()])


def predict(source):
    return encoder().predict(source, verbose=0)


def test_numpy_is_returned_as_is():
    assert data.to_dataset(X) is X


@pytest.mark.filterwarnings("ignore:Your input ran out of data")  # a generator has no length
def test_generator_of_bare_batches():
    wrapped = data.to_dataset(X[i : i + 4] for i in range(0, 12, 4))
    np.testing.assert_array_equal(predict(wrapped), X.reshape(12, -1))
    bare, labeled = data.to_dataset(iter([X[:4], (X[:4], 1)]))
    assert isinstance(bare, tuple) and len(bare) == 1 and np.array_equal(bare[0], X[:4])
    assert len(labeled) == 2 and labeled[1] == 1  # tuples pass unchanged


def test_list_of_batches_is_reiterable_and_trains():
    batches = [X[i : i + 4] for i in range(0, 12, 4)]
    wrapped = data.to_dataset(batches)
    np.testing.assert_array_equal(predict(wrapped), X.reshape(12, -1))
    np.testing.assert_array_equal(predict(wrapped), X.reshape(12, -1))  # second pass
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            layers.Rescaling(1 / 255),
            layers.Flatten(),
            layers.Dense(2),
            layers.ActivityRegularization(l2=1.0),
        ]
    )
    model.compile(optimizer="sgd")  # the loss is the layer's: fit needs no labels
    history = model.fit(wrapped, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()


class BareTensors(keras.utils.PyDataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        return keras.ops.convert_to_tensor(X[4 * i : 4 * i + 4])


def test_pydataset_of_bare_tensors():
    np.testing.assert_array_equal(predict(data.to_dataset(BareTensors())), X.reshape(12, -1))


def test_torch_loaders():
    torch = pytest.importorskip("torch")

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(X)

        def __getitem__(self, i):
            return torch.from_numpy(X[i])

    loader = torch.utils.data.DataLoader(Images(), batch_size=5)
    np.testing.assert_array_equal(predict(data.to_dataset(loader)), X.reshape(12, -1))
    assert loader.collate_fn is torch.utils.data.default_collate  # the original is untouched
    tuples = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(X)), batch_size=5)
    np.testing.assert_array_equal(predict(data.to_dataset(tuples)), X.reshape(12, -1))
    assert len(data.to_dataset(loader)) == 3
    np.testing.assert_array_equal(predict(data.to_dataset(Images(), batch_size=5)), X.reshape(12, -1))
    with pytest.raises(ValueError, match="batch_size"):
        data.to_dataset(Images())


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.data is imported only on its backend here")
def test_tf_data():
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(X)
    np.testing.assert_array_equal(predict(data.to_dataset(ds, batch_size=5)), X.reshape(12, -1))
    batched = ds.batch(4)
    assert data.to_dataset(batched) is batched
    with pytest.raises(ValueError, match="batch_size"):
        data.to_dataset(ds)


def test_to_dataset_rejects_non_iterables():
    with pytest.raises(TypeError, match="iterable"):
        data.to_dataset(5)
    with pytest.raises(TypeError, match="str"):
        data.to_dataset("images/")
    with pytest.raises(TypeError, match=r"fit\(x, y\)"):
        data.to_dataset((X, np.zeros(len(X))))


BLOCK_IMPORTS = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "torch", "matplotlib"):
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Block())
"""


def test_modules_import_without_tensorflow_torch_or_matplotlib():
    code = BLOCK_IMPORTS + "import keras_ssl.data, keras_ssl.evaluation, keras_ssl.plots; print('imported')"
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.stdout.strip().endswith("imported"), out.stderr[-2000:]
