"""A first run that convinces: the demo's data and baseline, help, summary, fine-tuned models, devices."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND, outputs_without_keras_ssl, random_images

import keras_ssl
from keras_ssl import backbones, cli, data, distribute, evaluation
from keras_ssl.methods import METHODS


def test_scattered_digits_are_the_digits_moved_and_resized():
    from sklearn.datasets import load_digits

    (x_train, y_train), (x_test, y_test) = data.scattered_digits(seed=0)
    assert x_train.shape == (2876, 32, 32, 1) and x_test.shape == (718, 32, 32, 1)
    assert x_train.dtype == np.uint8 and set(np.unique(y_train)) == set(range(10))
    boxes = []
    for image in x_train[:200, ..., 0]:
        rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
        boxes.append((rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1))
    boxes = np.array(boxes)
    assert boxes[:, 2].max() <= 20 and boxes[:, 3].max() <= 20  # drawn at 12-20 px
    assert len(np.unique(boxes[:, 0])) > 10 and len(np.unique(boxes[:, 1])) > 10  # at many places

    # Each image is a digit of its label: its tight box, shrunk to 8x8, is nearest the mean of that class.
    def normalised(image):
        rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
        box = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype("float32")
        small = data.resize_images(box[None, ..., None], 8)[0, ..., 0]
        return small / max(small.max(), 1e-6)

    digits = load_digits()
    templates = np.stack([np.mean([normalised(d) for d in digits.images[digits.target == c]], 0) for c in range(10)])
    nearest = [
        int(np.argmin(((templates - normalised(image)) ** 2).sum(axis=(1, 2)))) for image in x_train[:200, ..., 0]
    ]
    # A nearest-mean classifier is weak (1 vs 7...), but far above chance only with the right labels.
    assert np.mean(np.equal(nearest, y_train[:200])) > 0.5
    assert np.mean(np.equal(nearest, np.roll(y_train[:200], 7))) < 0.25
    again = data.scattered_digits(seed=0)
    np.testing.assert_array_equal(again[0][0], x_train)  # deterministic


def test_pretrain_prints_the_raw_pixel_baseline_line(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert (
        cli.main(
            [
                "pretrain",
                "--data",
                "scattered_digits",
                "--epochs",
                "1",
                "--batch-size",
                "64",
                "--limit",
                "256",
                "--output",
                out,
                "--verbose",
                "0",
                "--no-plots",
                "--knn-every",
                "0",
            ]
        )
        == 0
    )
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("raw-pixel kNN")]
    assert len(lines) == 1
    numbers = [float(w) for w in lines[0].replace("|", " ").split() if w.replace(".", "").isdigit() and "." in w]
    raw, before, after = numbers[:3]
    (x_train, y_train), (x_test, y_test) = data.scattered_digits()
    x_train, y_train = x_train[:256], y_train[:256]
    flat = [x.reshape(len(x), -1).astype("float32") for x in (x_train, x_test)]
    assert raw == pytest.approx(evaluation.knn_accuracy(flat[0], y_train, flat[1], y_test)["top1"], abs=1e-4)
    import json

    with open(os.path.join(out, "history.json")) as f:
        record = json.load(f)
    assert record["knn_raw_pixels"] == pytest.approx(raw, abs=1e-4)
    assert record["knn_before"] == pytest.approx(before, abs=1e-4)
    assert record["knn_after"] == pytest.approx(after, abs=1e-4)


def test_the_demo_is_scattered_digits_with_a_baseline():
    args = cli.build_parser().parse_args(list(cli.DEMO))
    assert args.data == "scattered_digits" and args.command == "pretrain"


def test_help_names_match_the_methods_and_show_defaults(capsys):
    assert set(cli.METHOD_NAMES) == set(METHODS)
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in (
        "--epochs EPOCHS passes over the data (default: 10)",
        "--seed SEED",
        "(default: 0)",
        "--batch-size BATCH_SIZE images per step (default: 128)",
    ):
        assert flag in text


def test_the_command_line_process_registers_every_class_for_load_model():
    # `import keras_ssl` imports every module, in the `keras-ssl` command too (its --help included), so
    # the command's process loads any saved model.
    script = (
        "import sys; sys.argv = ['keras-ssl', '--help']\n"
        "from keras_ssl import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "import keras\n"
        "print(keras.saving.get_registered_object('keras_ssl>SimCLR') is not None)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "usage: keras-ssl" in done.stdout, done.stdout + done.stderr[-2000:]
    assert done.stdout.strip().endswith("True"), done.stdout + done.stderr[-2000:]


def test_import_registers_every_class_for_load_model():
    script = (
        "import keras_ssl, sys\nimport keras\nprint(keras.saving.get_registered_object('keras_ssl>SimCLR') is not None)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().endswith("True"), done.stderr[-2000:]


def test_summary_names_targets_and_shows_built_view_makers():
    model = keras_ssl.BYOL(backbones.tiny_encoder((16, 16, 3), width=8), hidden_dim=8, projection_dim=4)
    model.build()
    lines = []
    model.summary(print_fn=lambda line, **kw: lines.append(line), line_length=120)
    text = "\n".join(lines)
    assert "target_encoder" in text and "target_projector" in text
    row = next(l for l in lines if "two_views" in l)
    assert "(None, 16, 16, 3)" in row and "?" not in row


def test_fine_tuned_classifier_loads_with_plain_keras(tmp_path):
    x, y = random_images(32), np.arange(32) % 2
    _, classifier = evaluation.fine_tune(
        backbones.tiny_encoder((16, 16, 3), width=8), x, y, x, y, epochs=1, batch_size=16, return_model=True
    )
    path = str(tmp_path / "classifier.keras")
    classifier.save(path)
    expected = classifier.predict(x, verbose=0)
    np.testing.assert_allclose(outputs_without_keras_ssl(path, x), expected, rtol=1e-5, atol=1e-5)


def test_auto_compilation_per_device():
    want_cpu = {"jax": True, "tensorflow": False, "torch": False}[BACKEND]
    want_gpu = {"jax": True, "tensorflow": True, "torch": False}[BACKEND]
    assert distribute.resolve_jit_compile("auto", device="cpu") is want_cpu
    assert distribute.resolve_jit_compile("auto", device="gpu") is want_gpu
    assert distribute.resolve_jit_compile(True, device="cpu") is True
    assert distribute.accelerator() in ("cpu", "gpu", "tpu")


def test_narrow_resnets_keep_16_channels_into_strided_1x1_convolutions():
    # oneDNN aborts on a stride-2 1x1 convolution with < 16 input channels (TensorFlow, PyTorch).
    encoder = backbones.resnet18(input_shape=(64, 64, 3), width=0.125)
    convs = [
        l
        for l in encoder.layers
        if isinstance(l, keras.layers.Conv2D) and l.kernel_size == (1, 1) and l.strides == (2, 2)
    ]
    assert convs and all(l.kernel.shape[-2] >= 16 for l in convs)  # input channels, in either layout
