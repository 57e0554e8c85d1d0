"""Bad input is met by a clear ValueError/TypeError before any training work.

Each case builds what a user would, passes one bad thing, and expects an
error whose message names the problem. A case that would start training
before failing is caught by `NoTraining`, which fails the test if a single
batch runs.
"""

import keras
import numpy as np
import pytest
from conftest import BACKEND, random_images, small_encoder

import keras_ssl
from keras_ssl import cli, losses

HEAD = dict(hidden_dim=16, projection_dim=8)


class NoTraining(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        raise AssertionError("training started before the bad input was rejected")


def simclr(**kw):
    model = keras_ssl.SimCLR(small_encoder(), seed=0, **HEAD, **kw)
    model.compile(optimizer="adam")
    return model


def fit(model, x, **kw):
    kw.setdefault("batch_size", 8)
    return model.fit(x, epochs=1, verbose=0, callbacks=[NoTraining()], **kw)


def float_images(n=16, size=16, channels=3):
    return random_images(n, size, channels).astype("float32") / 255.0


def with_value(value):
    x = float_images()
    x[3, 2, 1, 0] = value
    return x


def tf_dataset(shape):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(np.zeros(shape, "float32")).batch(4)


# (id, callable that must raise, exception type, regex the message must match)
FIT_CASES = [
    ("rank 3 images", lambda: fit(simclr(), random_images(16)[..., 0]), ValueError, "rank 4"),
    ("rank 5 images", lambda: fit(simclr(), random_images(16)[None]), ValueError, "rank 4"),
    ("1 channel for a 3-channel encoder", lambda: fit(simclr(), random_images(16, channels=1)), ValueError, "channel"),
    ("4 channels", lambda: fit(simclr(), random_images(16, channels=4)), ValueError, "channel"),
    ("batch of 1 for SimCLR", lambda: fit(simclr(), random_images(16), batch_size=1), ValueError, "at least 2"),
    ("dataset of 1 image", lambda: fit(simclr(), random_images(1)), ValueError, "at least 2"),
    ("empty dataset", lambda: fit(simclr(), random_images(16)[:0]), ValueError, "empty"),
    (
        "int32 images without value_range",
        lambda: fit(simclr(), random_images(16).astype("int32")),
        ValueError,
        "value_range",
    ),
    ("NaN in the images", lambda: fit(simclr(), with_value(np.nan)), ValueError, "NaN"),
    ("Inf in the images", lambda: fit(simclr(), with_value(np.inf)), ValueError, "Inf"),
    ("float images in [0, 255] undeclared", lambda: fit(simclr(), float_images() * 255), ValueError, "value_range"),
    (
        "values outside the declared range",
        lambda: fit(simclr(value_range=(0, 1)), with_value(2.0)),
        ValueError,
        "outside",
    ),
    ("string images", lambda: fit(simclr(), np.full((16, 16, 16, 3), "a")), ValueError, "dtype"),
    (
        "labels of the wrong length",
        lambda: simclr().fit(random_images(16), np.zeros(5), batch_size=8, verbose=0),
        ValueError,
        "length",
    ),
    (
        "images smaller than the views",
        lambda: fit(
            keras_ssl.SimCLR(small_encoder((None, None, 3)), input_shape=(32, 32, 3), seed=0, **HEAD),
            random_images(16, 16),
        ),
        ValueError,
        "smaller",
    ),
    ("tf.data of rank 3", lambda: fit(simclr(), tf_dataset((16, 16, 16))), ValueError, "rank 4"),
    ("tf.data with 1 channel", lambda: fit(simclr(), tf_dataset((16, 16, 16, 1))), ValueError, "channels"),
    (
        "Barlow Twins batch of 2",
        lambda: fit(
            _compiled(keras_ssl.BarlowTwins(small_encoder(), projection_dim=16, seed=0)),
            random_images(16),
            batch_size=2,
        ),
        ValueError,
        "at least",
    ),
    (
        "MoCo queue smaller than the batch",
        lambda: fit(
            _compiled(keras_ssl.MoCo(small_encoder(), queue_size=8, seed=0, **HEAD)), random_images(32), batch_size=16
        ),
        ValueError,
        "memory bank",
    ),
    (
        "NNCLR queue smaller than the batch",
        lambda: fit(
            _compiled(keras_ssl.NNCLR(small_encoder(), queue_size=8, seed=0, **HEAD)), random_images(32), batch_size=16
        ),
        ValueError,
        "memory bank|queue",
    ),
]


def _compiled(model):
    model.compile(optimizer="adam")
    return model


def barlow():
    return _compiled(keras_ssl.BarlowTwins(small_encoder(), projection_dim=16, seed=0))


class Listed(keras.utils.PyDataset):
    """A PyDataset over a list of batches."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.batches[i]


def torch_loader(n, batch_size):
    import torch

    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(float_images(n))), batch_size)


# Issue 33, findings 2 and 3: a later batch smaller than the views, a last batch smaller than the
# method's minimum (Barlow Twins: 2). Where the batch count is known, refused before training.
STREAM_CASES = [
    (
        "a later batch of a list smaller than the views",
        lambda: fit(simclr(), [float_images(8), float_images(8, 8)], batch_size=None),
        ValueError,
        r"batch 1: images of 8x8 pixels are smaller than the 16x16 views",
    ),
    (
        "Barlow Twins on a PyDataset whose last batch has 1 image",
        lambda: fit(barlow(), Listed([float_images(8), float_images(1)]), batch_size=None),
        ValueError,
        r"batch 1 has 1 image\(s\).*drop_remainder=True",
    ),
    (
        "Barlow Twins on a list whose last batch has 1 image",
        lambda: fit(barlow(), [float_images(8), float_images(1)], batch_size=None),
        ValueError,
        r"batch 1 has 1 image\(s\)",
    ),
]
if BACKEND == "torch":  # importing torch elsewhere costs seconds; the check is the same on every backend
    STREAM_CASES.append(
        (
            "Barlow Twins on a torch DataLoader with a remainder of 1",
            lambda: fit(barlow(), torch_loader(17, 8), batch_size=None),
            ValueError,
            r"last batch has 1 image\(s\).*drop_last=True",
        )
    )


OPTION_CASES = [
    ("SimCLR temperature 0", lambda: keras_ssl.SimCLR(small_encoder(), temperature=0.0), ValueError, "temperature"),
    ("SimCLR temperature < 0", lambda: keras_ssl.SimCLR(small_encoder(), temperature=-0.5), ValueError, "temperature"),
    ("SimCLR version 3", lambda: keras_ssl.SimCLR(small_encoder(), version=3), ValueError, "version"),
    ("MoCo temperature 0", lambda: keras_ssl.MoCo(small_encoder(), temperature=0.0), ValueError, "temperature"),
    ("NNCLR temperature < 0", lambda: keras_ssl.NNCLR(small_encoder(), temperature=-1.0), ValueError, "temperature"),
    ("BYOL momentum > 1", lambda: keras_ssl.BYOL(small_encoder(), momentum=1.5), ValueError, "momentum"),
    ("MoCo momentum < 0", lambda: keras_ssl.MoCo(small_encoder(), momentum=-0.1), ValueError, "momentum"),
    ("MoCo queue of 1", lambda: keras_ssl.MoCo(small_encoder(), queue_size=1), ValueError, "queue_size"),
    ("Barlow Twins lambd < 0", lambda: keras_ssl.BarlowTwins(small_encoder(), lambd=-1.0), ValueError, "lambd"),
    (
        "VICReg all coefficients 0",
        lambda: keras_ssl.VICReg(small_encoder(), sim_coeff=0, std_coeff=0, cov_coeff=0),
        ValueError,
        "coeff",
    ),
    ("encoder that is not a model", lambda: keras_ssl.SimCLR("resnet18"), TypeError, "encoder"),
    ("value_range reversed", lambda: keras_ssl.SimCLR(small_encoder(), value_range=(1, 0)), ValueError, "value_range"),
    (
        "a loss passed to compile",
        lambda: keras_ssl.SimCLR(small_encoder()).compile(optimizer="adam", loss="mse"),
        ValueError,
        "loss",
    ),
    ("nt_xent temperature 0", lambda: losses.nt_xent(np.ones((4, 2)), np.ones((4, 2)), 0.0), ValueError, "temperature"),
    ("crop scale above 1", lambda: keras_ssl.layers.RandomResizedCrop(8, scale=(0.5, 2.0)), ValueError, "scale"),
    ("unknown backbone depth", lambda: keras_ssl.backbones.resnet(depth=20), ValueError, "depth"),
    ("unknown dataset name", lambda: keras_ssl.data.load("imagenet-1k"), ValueError, "cifar10"),
    ("missing dataset path", lambda: keras_ssl.data.load("/no/such/file.npz"), ValueError, "file.npz"),
]

CLI_CASES = [
    (
        "CLI unknown dataset",
        lambda: cli.main(["pretrain", "--data", "imagenet-1k", "--output", "_unused"]),
        SystemExit,
        "imagenet-1k",
    ),
    ("CLI missing encoder file", lambda: cli.main(["evaluate", "no_such_encoder.keras"]), SystemExit, "no such file"),
]

CASES = FIT_CASES + STREAM_CASES + OPTION_CASES + CLI_CASES


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("make, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_with_a_clear_message(make, error, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message):
        make()


def test_corrupt_keras_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "encoder.keras"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(SystemExit, match="could not load"):
        cli.main(["evaluate", str(bad)])


def test_a_later_stream_batch_smaller_than_the_views_stops_training_at_that_batch():
    """Issue 33, finding 2, for a stream whose batches are read as training goes: each batch is checked."""
    batches = Listed([float_images(8), float_images(8, 8), float_images(8)])
    with pytest.raises(ValueError, match="batch 1: images of 8x8 pixels are smaller than the 16x16 views"):
        simclr().fit(batches, epochs=1, verbose=0)


def test_a_generators_short_batch_is_skipped_with_a_count_and_arrays_drop_their_remainder():
    """Issue 33, finding 3: a generator's length is unknown up front, so its short batch is skipped."""
    model, sizes = barlow(), []

    class Sizes(keras.callbacks.Callback):  # the batches that trained (TF's `model.step` counts one more)
        def on_train_batch_end(self, batch, logs=None):
            sizes.append(batch)

    batches = (b for b in [float_images(8), float_images(8), float_images(1)])
    with pytest.warns(UserWarning, match=r"skipped batch 2 of 1 image\(s\).*\(1 image\(s\) skipped in all\)"):
        history = model.fit(batches, epochs=1, verbose=0, callbacks=[Sizes()])
    assert sizes == [0, 1] and np.isfinite(history.history["loss"]).all()
    # Arrays: the library batches them itself, so the incomplete last batch (1 of 17) is left out.
    x, _, batch_size = model.check_fit_data(float_images(17), None, 8)
    assert len(x) == 16 and batch_size == 8
