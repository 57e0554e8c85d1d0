"""Streaming image files (ImageFiles) and the checks every batch source gets."""

import os
import warnings

import keras
import numpy as np
import pytest
from conftest import BACKEND, random_images, small_encoder

import keras_ssl
from keras_ssl import data

Image = pytest.importorskip("PIL.Image")


def save(path, image, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **kwargs)
    return path


def rgb(h, w, seed=0):
    return Image.fromarray(random_images(1, 1, seed=seed)[0].repeat(h, 0).repeat(w, 1))


# ------------------------------------------------------------ decoding
def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100], [32896, 65535]], "uint16")  # 0, 100, 128, 255 in 8 bits
    path = save(str(tmp_path / "deep.png"), Image.fromarray(values))
    image, note = data.decode_image(path, channels=1)
    np.testing.assert_array_equal(image[..., 0], [[0, 100], [128, 255]])
    assert note == "16-bit"


def test_alpha_is_composited_on_white_and_palette_converted(tmp_path):
    rgba = np.zeros((2, 2, 4), "uint8")
    rgba[0, 0] = (10, 20, 30, 255)  # opaque pixel keeps its colour; the rest is transparent
    path = save(str(tmp_path / "alpha.png"), Image.fromarray(rgba, "RGBA"))
    image, note = data.decode_image(path)
    np.testing.assert_array_equal(image[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(image[1, 1], (255, 255, 255))
    assert "alpha" in note
    palette = save(str(tmp_path / "p.png"), rgb(4, 4).convert("P"))
    image, note = data.decode_image(palette)
    assert image.shape == (4, 4, 3) and note == "palette"


def test_cmyk_and_exif_rotation(tmp_path):
    cmyk = save(str(tmp_path / "cmyk.jpg"), Image.new("CMYK", (6, 4), (0, 255, 255, 0)))
    image, note = data.decode_image(cmyk)
    assert note == "CMYK" and image.shape == (4, 6, 3)
    assert image[..., 0].mean() > 200 and image[..., 1:].mean() < 60  # cyan 0, magenta+yellow: red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rotated = save(str(tmp_path / "phone.jpg"), rgb(4, 8), exif=exif)
    image, note = data.decode_image(rotated)
    assert image.shape == (8, 4, 3) and note == "EXIF-rotated"


def test_resize_keeps_aspect_and_centre_crops(tmp_path):
    array = np.zeros((20, 40, 3), "uint8")
    array[:, 8:32] = 255  # the crop keeps the centre half (10:30), white with a margin for the filter
    path = save(str(tmp_path / "wide.png"), Image.fromarray(array))
    image, _ = data.decode_image(path, size=10)
    assert image.shape == (10, 10, 3)
    assert image.min() == 255
    squeezed = np.asarray(Image.fromarray(array).resize((10, 10), Image.BILINEAR))
    assert squeezed.min() == 0  # a plain resize (aspect lost) would keep the black sides


# ------------------------------------------------------------ folders
def mixed_folder(root):
    """Two classes of RGB images of 40-80 px, any aspect, plus every bad-file kind."""
    rng = np.random.default_rng(0)
    for i in range(12):
        h, w = rng.integers(40, 81, 2)
        save(str(root / ("cat" if i % 2 else "dog") / f"{i}.jpg"), rgb(h, w, seed=i))
    good = (root / "dog" / "0.jpg").read_bytes()
    (root / "dog" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "dog" / "garbage.png").write_bytes(os.urandom(500))
    (root / "cat" / "text.jpg").write_text("not an image at all")
    (root / "cat" / "README.txt").write_text("notes")
    save(str(root / "cat" / "cmyk.jpg"), Image.new("CMYK", (50, 60), (0, 255, 255, 0)))
    save(str(root / "cat" / "deep.png"), Image.fromarray(np.full((45, 45), 40000, "uint16")))
    save(str(root / "dog" / "palette.png"), rgb(50, 70).convert("P"))
    save(str(root / "dog" / "alpha.png"), Image.new("RGBA", (64, 48), (200, 10, 10, 128)))
    save(str(root / "dog" / "gray.png"), rgb(60, 60).convert("L"))
    exif = Image.Exif()
    exif[0x0112] = 8
    save(str(root / "cat" / "phone.jpg"), rgb(40, 72), exif=exif)
    return root


def test_a_folder_of_mixed_sizes_and_bad_files_streams_with_one_warning(tmp_path):
    root = mixed_folder(tmp_path / "photos")
    with pytest.warns(UserWarning, match=r"left out 1 non-image file\(s\): README.txt"):
        stream = data.ImageFiles.from_folder(str(root), image_size=32, batch_size=4, workers=2)
    assert len(stream.files) == 21 and stream.classes == ["cat", "dog"] and stream.channels == 3
    assert stream.num_batches == 5
    shapes = {stream[i][0].shape for i in range(stream.num_batches)}
    assert shapes == {(4, 32, 32, 3)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stream.on_epoch_end()
        stream.on_epoch_end()  # nothing new: no second warning
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    message = messages[0]
    # Which files a batch held depends on the shuffle, so decode them all first.
    assert "skipped" in message
    all_files = stream.subset(range(21), shuffle=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        all_files.to_arrays()
    message = str(caught[-1].message)
    assert "skipped 3 file(s)" in message
    for name in ("truncated.jpg", "garbage.png", "text.jpg"):
        assert name in message
    assert "converted 5 file(s)" in message
    for name in (
        "cmyk.jpg (CMYK)",
        "deep.png (16-bit",
        "palette.png (palette)",
        "alpha.png (alpha)",
        "gray.png (grayscale)",
    ):
        assert name in message
    assert "phone.jpg" not in message  # orientation is applied, not a problem


def test_every_epoch_reshuffles_reproducibly_and_labels_follow(tmp_path):
    for i in range(10):
        save(str(tmp_path / f"c{i % 2}" / f"{i}.png"), Image.fromarray(np.full((8, 8, 3), 20 * i, "uint8")))
    stream = data.ImageFiles.from_folder(str(tmp_path), image_size=8, batch_size=5, with_labels=True, seed=3)
    first = np.concatenate([stream[i][0][:, 0, 0, 0] for i in range(2)])
    labels = np.concatenate([stream[i][1] for i in range(2)])
    np.testing.assert_array_equal(labels, (first // 20) % 2)  # each image with its own label
    stream.on_epoch_end()
    second = np.concatenate([stream[i][0][:, 0, 0, 0] for i in range(2)])
    assert sorted(first) == sorted(second) and list(first) != list(second)
    again = data.ImageFiles.from_folder(str(tmp_path), image_size=8, batch_size=5, seed=3)
    np.testing.assert_array_equal(np.concatenate([again[i][0][:, 0, 0, 0] for i in range(2)]), first)


def test_file_list_with_class_names(tmp_path):
    for i in range(4):
        save(str(tmp_path / "img" / f"{i}.png"), rgb(10, 12, seed=i))
    (tmp_path / "train.csv").write_text(
        "path,label\n" + "".join(f"img/{i}.png,{'bird' if i < 3 else 'ant'}\n" for i in range(4))
    )
    stream = data.ImageFiles.from_list(str(tmp_path / "train.csv"), image_size=8, batch_size=2, shuffle=False)
    assert stream.classes == ["ant", "bird"]
    np.testing.assert_array_equal(stream.labels, [1, 1, 1, 0])
    (tmp_path / "plain.txt").write_text("img/0.png\nimg/1.png\n")
    plain = data.ImageFiles.from_list(str(tmp_path / "plain.txt"), image_size=8, batch_size=2)
    assert plain.labels is None and plain[0][0].shape == (2, 8, 8, 3)


def test_empty_and_undecodable_folders_fail_before_training(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        data.ImageFiles.from_folder(str(tmp_path / "empty"), image_size=8)
    for i in range(3):
        (tmp_path / "junk" / "a").mkdir(parents=True, exist_ok=True)
        (tmp_path / "junk" / "a" / f"{i}.jpg").write_bytes(b"nope" * i)
    with pytest.raises(ValueError, match="none of the first 3 image file"):
        data.ImageFiles.from_folder(str(tmp_path / "junk"), image_size=8)


def test_grayscale_folder_gets_one_channel(tmp_path):
    for i in range(4):
        save(str(tmp_path / f"{i}.png"), rgb(9, 9, seed=i).convert("L"))
    stream = data.ImageFiles.from_folder(str(tmp_path), image_size=8, batch_size=2)
    assert stream.channels == 1 and stream[0][0].shape == (2, 8, 8, 1)


@pytest.mark.filterwarnings("ignore:ImageFiles")
@pytest.mark.filterwarnings("ignore:.*left out")
def test_simclr_trains_on_a_streamed_folder_of_mixed_sizes(tmp_path):
    root = mixed_folder(tmp_path / "photos")
    train = data.ImageFiles.from_folder(str(root), image_size=32, batch_size=4, workers=2)
    model = keras_ssl.SimCLR(small_encoder((32, 32, 3)), seed=0)
    model.compile(optimizer="adam")
    history = model.fit(train, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert int(keras.ops.convert_to_numpy(model.step)) == 2 * train.num_batches


# ------------------------------------------- one set of checks for all
X = random_images(8, 16)


def sources(batch):
    """The same first batch from every kind of source available on this backend."""
    made = {"numpy": lambda: batch}

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return batch

    made["pydataset"] = Batches
    made["generator"] = lambda: (b for b in [batch, batch])
    made["list"] = lambda: [batch, batch]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        made["tf.data"] = lambda: tf.data.Dataset.from_tensors(batch).repeat(2)
    if BACKEND == "torch":
        import torch

        made["torch"] = lambda: torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(batch)), batch_size=len(batch)
        )
    return made


CASES = {
    "float 0-255": (X.astype("float32"), {}, r"value_range=\(0, 255\)"),
    "channels-first": (np.ascontiguousarray(X.transpose(0, 3, 1, 2)), {}, "channels-first"),
    "int32": (X.astype("int32"), {}, r"int32 need value_range"),
    "too small": (X[:, :8, :8], {}, "smaller than the 16x16 views"),
    "NaN": (np.where(X > 250, np.nan, X / 255.0).astype("float32"), {}, "NaN"),
    "outside declared range": (X.astype("float32") * 2, {"value_range": (0, 255)}, "outside value_range"),
}


@pytest.fixture(scope="module")
def model():
    return keras_ssl.SimCLR(small_encoder((16, 16, 3)), seed=0)


@pytest.mark.parametrize("case", CASES)
def test_every_source_gets_the_array_checks(case, model):
    batch, kwargs, match = CASES[case]
    model.value_range = kwargs.get("value_range")
    for name, make in sources(batch).items():
        with pytest.raises(ValueError, match=match):
            model.check_fit_data(make(), None, None)
    model.value_range = None


def test_dicts_and_triples_are_unpacked_and_batch_size_reaches_a_torch_dataset(model):
    out, _, _ = model.check_fit_data([{"image": X, "label": np.arange(8)}], None, None)
    batch = next(iter(out))
    assert len(batch) == 2 and batch[0].shape == X.shape
    out, _, _ = model.check_fit_data([(X, np.arange(8), np.array(["f.png"] * 8))], None, None)
    assert len(next(iter(out))) == 2  # the filename is dropped, not taken as sample weights
    with pytest.raises(ValueError, match=r"keys \['pixels'\]"):
        model.check_fit_data([{"pixels": X}], None, None)
    with pytest.raises(ValueError, match="empty"):
        model.check_fit_data([], None, None)
    if BACKEND == "torch":
        import torch

        class Samples(torch.utils.data.Dataset):
            def __len__(self):
                return 8

            def __getitem__(self, i):
                return {"image": torch.from_numpy(X[i]), "label": i, "path": f"{i}.png"}

        out, _, _ = model.check_fit_data(Samples(), None, 4)
        assert out[0][0].shape == (4, 16, 16, 3)
        loader = torch.utils.data.DataLoader(Samples(), batch_size=4)
        out, _, _ = model.check_fit_data(loader, None, None)
        assert len(next(iter(out))) == 2
    if BACKEND == "tensorflow":
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices({"image": X, "label": np.arange(8), "path": ["p"] * 8})
        out, _, _ = model.check_fit_data(ds, None, 4)
        assert len(next(iter(out))) == 2


@pytest.mark.parametrize("bad", [(0, float("inf")), "01", (1,), (255, 0), ("a", "b")])
def test_bad_value_ranges_are_refused(bad):
    with pytest.raises(ValueError, match="value_range"):
        keras_ssl.SimCLR(small_encoder((16, 16, 3)), value_range=bad)
    with pytest.raises(ValueError, match="value_range"):
        data.check_images(X, value_range=bad)


def test_npz_with_mismatched_labels_is_refused(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=X, y_train=np.arange(8), x_test=X[:5], y_test=np.arange(3))
    with pytest.raises(ValueError, match="y_test has 3 labels for 5 images"):
        data.load(str(tmp_path / "bad.npz"))
