"""The keras-ssl command line: pretrain, evaluate, export, plot."""

import json
import os
import zipfile

import keras
import numpy as np
import pytest

from keras_ssl import backbones, cli, data, evaluation, keras_compat, optimizers, recipes, rundir
from keras_ssl.cli import pretraining
from keras_ssl.layers import RandomResizedCrop
from keras_ssl.methods import METHODS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "digits")
    code = cli.main(
        [
            "pretrain",
            "--data",
            "digits",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--limit",
            "128",
            "--width",
            "0.25",
            "--output",
            out,
            "--verbose",
            "0",
        ]
    )
    assert code == 0
    return out


def test_pretrain_writes_encoder_history_and_figures(run_dir):
    for name in (
        "encoder.keras",
        "model.keras",
        "history.json",
        "history.png",
        "views.png",
        "embedding.png",
        "retrieval.png",
    ):
        assert os.path.isfile(os.path.join(run_dir, name)), name
    with open(os.path.join(run_dir, "history.json")) as f:
        record = json.load(f)
    assert len(record["loss"]) == 1 and np.isfinite(record["loss"][0])
    assert record["knn_top1"] == [pytest.approx(record["knn_after"])]  # KNNMonitor, every epoch
    assert 0 <= record["knn_before"] <= 1 and 0 <= record["knn_after"] <= 1
    assert not [p for p in os.listdir(run_dir) if p.endswith(".tmp")]


def test_pretrain_refuses_to_overwrite(run_dir):
    before = os.path.getmtime(os.path.join(run_dir, "encoder.keras"))
    with pytest.raises(SystemExit, match="--overwrite"):
        cli.main(["pretrain", "--output", run_dir, "--epochs", "1"])
    assert os.path.getmtime(os.path.join(run_dir, "encoder.keras")) == before


def test_evaluate_knn_equals_library_call(run_dir, tmp_path, capsys):
    out = str(tmp_path / "knn.json")
    assert (
        cli.main(
            [
                "evaluate",
                run_dir,
                "--data",
                "digits",
                "--protocol",
                "knn",
                "--k",
                "20",
                "--limit",
                "128",
                "--output",
                out,
            ]
        )
        == 0
    )
    with open(out) as f:
        got = json.load(f)
    encoder = keras.saving.load_model(os.path.join(run_dir, "encoder.keras"))
    (x, y), (xt, yt) = data.load("digits")
    want = evaluation.knn_accuracy(evaluation.embed(encoder, x[:128]), y[:128], evaluation.embed(encoder, xt), yt, k=20)
    assert got["top1"] == pytest.approx(want["top1"], abs=1e-6)
    assert "knn on digits" in capsys.readouterr().out


def test_export_gives_the_same_encoder(run_dir, tmp_path):
    out = str(tmp_path / "encoder.keras")
    assert cli.main(["export", run_dir, "--output", out]) == 0
    x = np.random.default_rng(0).random((4, 32, 32, 1)).astype("float32")
    a = keras.saving.load_model(out).predict(x, verbose=0)
    b = keras.saving.load_model(os.path.join(run_dir, "encoder.keras")).predict(x, verbose=0)
    np.testing.assert_allclose(a, b, atol=1e-6)
    with zipfile.ZipFile(out) as archive:  # Keras's layers only: loads without keras_ssl
        assert "keras_ssl" not in archive.read("config.json").decode()
    with pytest.raises(SystemExit, match="exists"):
        cli.main(["export", run_dir, "--output", out])


def test_plot_redraws_figures(run_dir):
    os.remove(os.path.join(run_dir, "embedding.png"))
    assert cli.main(["plot", run_dir]) == 0
    assert os.path.isfile(os.path.join(run_dir, "embedding.png"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pretrain", "--data", "nope", "--output", "unused"], "nope"),
        (["pretrain", "--backbone", "vgg", "--output", "unused", "--limit", "64"], "backbone"),
        (["evaluate", "missing.keras"], "no such file"),
        (["plot", "not_a_run"], "history.json"),
    ],
)
def test_bad_arguments_name_the_problem(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises((SystemExit, ValueError), match=message):
        cli.main(argv)


def test_corrupt_encoder_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "encoder.keras"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(SystemExit, match="could not load"):
        cli.main(["evaluate", str(bad)])


# The CLI's wiring of a method (its views, the digit rule, the run's files) does not depend on the
# backend, and every method trains on every backend in the shared harness: each method pretrains
# from the CLI on one backend in turn, so the three backends' runs cover every method once.
_BACKENDS = ("torch", "tensorflow", "jax")  # PyTorch, the fastest here, first
CLI_METHODS = [m for i, m in enumerate(sorted(METHODS)) if _BACKENDS[i % 3] == keras.backend.backend()]


@pytest.mark.slow
@pytest.mark.parametrize("name", CLI_METHODS)
def test_every_method_pretrains_from_the_cli_with_its_declared_views(name, tmp_path, monkeypatch):
    method = METHODS[name]
    seen = {}
    forward = method.ssl_forward

    def recording(self, views, *extra, training):
        seen["views"] = [tuple(v.shape[1:]) for v in views]
        seen["model"] = self
        return forward(self, views, *extra, training=training)

    monkeypatch.setattr(method, "ssl_forward", recording)
    # The ViT methods' default vit_tiny (12 blocks) would make this the suite's slowest test; the
    # wiring under test is the same with 2 narrow blocks.
    small = lambda image_size, patch_size, **kw: backbones.vit(image_size, patch_size, 32, 2, 2, **kw)
    monkeypatch.setattr(backbones, "vit_tiny", small)
    code = cli.main(
        [
            "pretrain",
            "--method",
            name,
            "--data",
            "digits",
            "--epochs",
            "1",
            "--batch-size",
            # W-MSE whitens sub-batches of 128 (the paper's), more rows than its 64 features.
            "128" if name == "wmse" else "32",
            "--limit",
            "128" if name == "wmse" else "64",
            "--output",
            str(tmp_path / name),
            "--verbose",
            "0",
            "--knn-every",
            "0",
            "--no-plots",
        ]
    )
    assert code == 0
    # Full-size views of the image's side; multi-crop adds 4 local crops of half of it.
    side = data.load("digits")[0][0].shape[1]
    want = [(side, side, 1)] * method.global_views + ([(side // 2, side // 2, 1)] * 4 if method.local_views else [])
    assert seen["views"] == want
    # The digit rule reaches every method: no flips, no crop under 30 % of the image.
    crops = [layer for layer in keras_compat.sublayers(seen["model"].views) if isinstance(layer, RandomResizedCrop)]
    assert crops  # TwoViews(aug) shares one pipeline between its two views
    assert all(not c.horizontal_flip and c.scale[0] >= 0.3 for c in crops)


def test_run_pretrain_is_the_command_called_from_python(tmp_path, capsys):
    out = tmp_path / "py"
    # The keywords are the flags: the same Namespace as the command line.
    assert cli.pretraining._pretrain_args(
        out, epochs=3, no_plots=True, no_flip=False, value_range=(0, 255)
    ) == cli.build_parser().parse_args(
        ["pretrain", "--output", str(out), "--epochs", "3", "--no-plots", "--value-range", "0,255"]
    )
    assert (
        cli.run_pretrain(
            out, data="digits", epochs=1, batch_size=32, limit=64, width=0.25, verbose=0, knn_every=0, no_plots=True
        )
        == 0
    )
    with open(out / "history.json") as f:
        record = json.load(f)
    assert len(record["loss"]) == 1 and record["limit"] == 64 and record["batch_size"] == 32
    assert not (out / "history.png").exists()
    # Refused as the command refuses them: the parser's message, then SystemExit; unknown keywords: TypeError.
    with pytest.raises(SystemExit):
        cli.run_pretrain(out, epochs=0)
    err = capsys.readouterr().err
    assert "argument --epochs" in err and "must be in" in err
    with pytest.raises(TypeError, match="'epoch'.*epochs"):
        cli.run_pretrain(out, epoch=1)
    with pytest.raises(TypeError, match="switch --no-plots"):
        cli.run_pretrain(out, no_plots="yes")


def test_unknown_method_is_refused_by_the_parser_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--method", "nope"])
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and "simclr" in err


def test_help_lists_every_method(capsys):
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS)


# ------------------------------------------------------- streamed folders
@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(40):
        h, w = rng.integers(40, 81, 2)  # every image its own size and aspect
        colour = (200, 40, 40) if i % 2 else (40, 40, 200)
        array = np.clip(rng.normal(colour, 30, (h, w, 3)), 0, 255).astype("uint8")
        folder = root / ("red" if i % 2 else "blue")
        folder.mkdir(exist_ok=True)
        Image.fromarray(array).save(folder / f"{i}.jpg")
    out = str(tmp_path_factory.mktemp("run") / "folder")
    here = os.getcwd()
    os.chdir(root.parent)  # a relative --data path: the run must record it absolutely
    try:
        code = cli.main(
            [
                "pretrain",
                "--data",
                root.name,
                "--image-size",
                "32",
                "--batch-size",
                "8",
                "--steps-per-epoch",
                "2",
                "--epochs",
                "2",
                "--width",
                "0.25",
                "--output",
                out,
                "--verbose",
                "0",
                "--no-plots",
            ]
        )
    finally:
        os.chdir(here)
    assert code == 0
    return str(root), out


def test_pretrain_streams_a_folder_of_mixed_sizes(folder_run, capsys):
    root, out = folder_run
    with open(os.path.join(out, "data.json")) as f:
        spec = json.load(f)
    assert spec["data"] == root and spec["image_size"] == 32
    with open(os.path.join(out, "history.json")) as f:
        record = json.load(f)
    assert len(record["loss"]) == 2 and record["steps_per_epoch"] == 2
    model = keras.saving.load_model(os.path.join(out, "model.keras"))
    assert int(keras.ops.convert_to_numpy(model.step)) == 4  # 2 epochs x --steps-per-epoch 2
    assert model.image_shape == (32, 32, 3)


def test_evaluate_and_plot_use_the_runs_own_data(folder_run, capsys, monkeypatch, tmp_path):
    root, out = folder_run
    monkeypatch.chdir(tmp_path)  # elsewhere: the recorded path is absolute
    assert cli.main(["evaluate", out, "--k", "5"]) == 0
    assert f"knn on {os.path.basename(root)}" in capsys.readouterr().out
    assert cli.main(["plot", out]) == 0
    assert os.path.isfile(os.path.join(out, "embedding.png"))
    with pytest.raises(SystemExit, match="3-channel images but digits has 1"):
        cli.main(["evaluate", out, "--data", "digits"])
    with pytest.raises(SystemExit, match="--image-size 32"):
        cli.main(["evaluate", out, "--image-size", "40"])


def test_backbone_flag_builds_keras_applications_for_the_data():
    # What `pretrain --backbone mobilenet_v3_small` builds for digits (32x32, one channel);
    # training it end to end is test_byo_backbone's work.
    encoder = cli._build_encoder("mobilenet_v3_small", (32, 32, 1), 1.0, 32)
    assert encoder.name == "MobileNetV3Small" and encoder.input_shape == (None, 32, 32, 1)
    assert "gray_to_rgb" in [layer.name for layer in encoder.layers]
    assert cli.build_parser().parse_args(["pretrain", "--backbone", "ResNet50", "--weights", "w.h5"]).weights == "w.h5"
    with pytest.raises(SystemExit, match="unknown backbone 'resnet9'"):
        cli._build_encoder("resnet9", (32, 32, 3), 1.0, 32)


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--limit", "0"),
        ("--limit", "-5"),
        ("--batch-size", "0"),
        ("--crop-scale", "0"),
        ("--epochs", "-1"),
        ("--width", "0.001"),
        ("--learning-rate", "0"),
        ("--crop-scale", "1.5"),
        ("--seed", "-1"),
        ("--checkpoint-every", "0"),
        ("--divergence", "1"),
    ],
)
def test_out_of_range_arguments_are_refused_with_the_range(flag, value, capsys):
    with pytest.raises(SystemExit):
        cli.main(["pretrain", flag, value, "--output", "unused"])
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "must be in" in err and value in err


def test_written_files_follow_the_umask(run_dir):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("encoder.keras", "model.keras", "history.json"):
        assert os.stat(os.path.join(run_dir, name)).st_mode & 0o777 == 0o666 & ~mask, name


@pytest.mark.parametrize(
    "output,message",
    [
        ("encoder", "must end in .keras"),
        ("missing/dir/encoder.keras", "does not exist"),
        ("d.keras", "is a directory"),
    ],
)
def test_export_checks_its_output_before_loading(output, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.keras").mkdir()
    with pytest.raises(SystemExit, match=message):
        cli.main(["export", "no_model_needed.keras", "--output", output])


def test_pretrain_output_that_is_a_file_fails_before_any_work(tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    with pytest.raises(SystemExit, match="is a file, not a directory"):
        cli.main(["pretrain", "--output", str(target), "--data", "no_such_dataset"])


def test_pretrain_read_only_output_fails_before_any_work(tmp_path, monkeypatch):
    import errno

    def read_only(*args, **kwargs):  # as a read-only mount answers (root ignores chmod, so it is simulated)
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(rundir.tempfile, "mkstemp", read_only)
    with pytest.raises(SystemExit, match="cannot write to --output .*Read-only file system"):
        cli.main(["pretrain", "--output", str(tmp_path / "ro"), "--data", "no_such_dataset"])


def test_a_second_pretrain_on_a_locked_run_directory_names_the_first(tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "busy"
    folder.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / ".lock").write_text(str(other.pid))
        with pytest.raises(SystemExit, match=f"in use by another keras-ssl pretrain \\(pid {other.pid}\\)"):
            cli.main(["pretrain", "--output", str(folder), "--data", "no_such_dataset"])
    finally:
        other.kill()
        other.wait()
    # Its process gone, the lock is stale: the next run takes it (and fails here only on the data).
    with pytest.raises(SystemExit, match="no_such_dataset"):
        cli.main(["pretrain", "--output", str(folder), "--data", "no_such_dataset"])
    assert not (folder / ".lock").exists()


def test_recipe_paper_compiles_the_methods_paper_optimizer_scaled_to_the_run():
    # BYOL's paper recipe is LARS at 1.0 per 256 images (keras_ssl.recipes); 128 images at a global
    # batch of 64 make 2 steps an epoch, so 10 epochs are 20 steps with a one-epoch (2-step) warm-up.
    args = cli.build_parser().parse_args(["pretrain", "--method", "byol", "--recipe", "paper", "--batch-size", "64"])
    model = pretraining._build_model(args, METHODS["byol"], "tiny", (16, 16, 3), None, 128)
    expected = recipes.paper_optimizer("byol", 64, 2, 10)
    assert type(model.optimizer) is type(expected) is optimizers.LARS
    schedule = keras.optimizers.schedules.deserialize(model.optimizer.get_config()["learning_rate"])
    rate, reference = schedule, keras.optimizers.schedules.deserialize(expected.get_config()["learning_rate"])
    for step in (0, 1, 2, 11, 19):
        assert float(rate(step)) == pytest.approx(float(reference(step)))
    assert float(rate(2)) > float(rate(19))  # a schedule, not a constant
    default = cli.build_parser().parse_args(["pretrain", "--method", "byol"])
    assert isinstance(
        pretraining._build_model(default, METHODS["byol"], "tiny", (16, 16, 3), None, 128).optimizer,
        keras.optimizers.Adam,
    )
