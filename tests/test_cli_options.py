"""`keras-ssl pretrain --option NAME=VALUE` (any constructor argument of the method) and `--local-crops N`."""

import json
import os
import zipfile

import keras
import numpy as np
import pytest

from keras_ssl import cli
from keras_ssl.checkpoints import STATE
from keras_ssl.cli import building, pretraining
from keras_ssl.methods import METHODS

FAST = [
    "--data",
    "digits",
    "--image-size",
    "16",
    "--epochs",
    "1",
    "--width",
    "0.25",
    "--knn-every",
    "0",
    "--no-plots",
    "--verbose",
    "0",
]


# The CLI's wiring does not depend on the backend, and MMCR's momentum variant and ReSSL's multi-crop
# train on all three in their own tests (test_mmcr.py, test_ressl.py): the runs here use PyTorch,
# which runs them fastest (4 s; TensorFlow and JAX compile their steps: 18 s each).
torch_only = pytest.mark.skipif(keras.backend.backend() != "torch", reason="a CLI run on one backend (PyTorch)")


def _args(*argv):
    return cli.build_parser().parse_args(["pretrain", *argv])


@pytest.fixture
def no_knn(monkeypatch):
    """The runs here test the model's wiring: the kNN scores before and after training are skipped."""
    monkeypatch.setattr(pretraining, "_knn", lambda *a, **k: None)
    monkeypatch.setattr(pretraining, "_raw_pixel_knn", lambda *a, **k: (None, ""))


def _recording(monkeypatch, method):
    """Records the views and the model that `method.ssl_forward` sees."""
    seen, forward = {}, method.ssl_forward

    def recording(self, views, *extra, training):
        seen["views"], seen["model"] = [tuple(v.shape[1:]) for v in views], self
        return forward(self, views, *extra, training=training)

    monkeypatch.setattr(method, "ssl_forward", recording)
    return seen


def test_values_are_python_literals_else_text():
    items = ["a=4096", "b=0.99", "c=True", "d=None", "e=(0.4, 1.0)", "f=dcl", "g = 1e-3", "h='x y'", "i=a=b"]
    # Written out by hand: literal_eval's types, and the text itself where the value is no literal.
    expected = {"a": 4096, "b": 0.99, "c": True, "d": None, "e": (0.4, 1.0), "f": "dcl", "g": 0.001, "h": "x y"}
    assert building._option_items(items) == {**expected, "i": "a=b"}
    assert building._option_items(None) == {}
    assert _args("--option", "a=1", "--option", "b=x").option == ["a=1", "b=x"]  # repeatable


def test_options_reach_the_model_and_its_config():
    args = _args("--method", "moco", "--width", "0.25", "--option", "queue_size=256", "--option", "temperature=0.5")
    model = building._build_model(args, METHODS["moco"], "tiny", (16, 16, 3), None, 64)
    assert (model.queue_size, model.temperature) == (256, 0.5)
    assert model.get_config()["queue_size"] == 256 and model.queue.size == 256
    # A `num_views` option also sets the number of views the recipe makes (their check would refuse a mismatch).
    args = _args("--method", "mmcr", "--width", "0.25", "--option", "num_views=3", "--option", "momentum=0.9")
    model = building._build_model(args, METHODS["mmcr"], "tiny", (16, 16, 3), None, 64)
    assert model.num_views == model.views.num_views == 3
    assert model.momentum == pytest.approx(0.9) and model.momentum_pairs


@torch_only
def test_mmcr_with_momentum_trains_from_the_cli(tmp_path, monkeypatch, no_knn):
    seen = _recording(monkeypatch, METHODS["mmcr"])
    out = tmp_path / "mmcr"
    argv = ["pretrain", "--method", "mmcr", "--option", "momentum=0.99", "--option", "num_views=2"]
    assert cli.main([*argv, *FAST, "--limit", "16", "--batch-size", "8", "--output", str(out)]) == 0
    model = seen["model"]
    assert len(seen["views"]) == 2 and model.momentum == pytest.approx(0.99)
    assert [target for _, target in model.momentum_pairs] == ["momentum_encoder", "momentum_projector"]
    with open(out / "history.json") as f:
        assert np.isfinite(json.load(f)["loss"]).all()
    with zipfile.ZipFile(out / "model.keras") as z:  # the saved model carries the option
        config = json.loads(z.read("config.json"))["config"]
    assert config["momentum"] == pytest.approx(0.99) and config["num_views"] == 2


@torch_only
def test_ressl_with_local_crops_trains_one_epoch_on_views_of_two_sizes(tmp_path, monkeypatch, no_knn):
    seen = _recording(monkeypatch, METHODS["ressl"])
    argv = ["pretrain", "--method", "ressl", "--local-crops", "2", "--option", "queue_size=64", *FAST]
    assert cli.main([*argv, "--limit", "16", "--batch-size", "8", "--output", str(tmp_path / "ressl")]) == 0
    # The weak and the strong view of the image's side, then 2 local crops of half of it (ReSSLMultiCrop).
    side = 16  # --image-size
    assert seen["views"] == [(side, side, 1)] * 2 + [(side // 2, side // 2, 1)] * 2
    assert seen["model"].local_views and seen["model"].encoder.input_shape[1:3] == (None, None)
    # A multi-crop method gets the number too.
    views = building._method_options(_args("--method", "dino", "--local-crops", "3"), METHODS["dino"], (16, 16, 3))
    assert views["views"].num_local == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "mmcr", "--option", "momentun=0.99"], "MMCR takes no `momentun`; its options: .*momentum"),
        (["--option", "seed=3"], "--option seed: the command sets `seed` itself, from --seed"),
        (["--option", "encoder=resnet18"], "--option encoder: .*--backbone"),
        (["--option", "views=None"], "--option views: .*--crop-scale"),
        (["--option", "input_shape=(8, 8, 1)"], "--option input_shape: .*--image-size"),
        (["--option", "value_range=(0, 1)"], "--option value_range: .*--value-range"),
        (["--method", "deepclusterv2", "--option", "num_samples=9"], "--option num_samples: .*--limit"),
        (["--option", "momentum"], "--option 'momentum': expected NAME=VALUE"),
        (["--option", "=3"], "expected NAME=VALUE"),
        (["--option", "temperature="], "expected NAME=VALUE"),
        (["--option", "a=1", "--option", "a=2"], "--option a is given twice"),
        (["--temperature", "0.2", "--option", "temperature=0.3"], "--temperature sets it too"),
    ],
)
def test_bad_options_stop_before_any_work_with_one_line(argv, message, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="^keras-ssl: .*" + message) as raised:
        cli.main(["pretrain", *argv, "--data", "no_such_data", "--output", str(out)])  # no data read: checked first
    assert "\n" not in str(raised.value.code) and not out.exists()


def test_local_crops_for_a_method_without_them_stop_before_any_work(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="^keras-ssl: --local-crops: simclr's views have no local crops; .*ressl"):
        cli.main(["pretrain", "--local-crops", "2", "--data", "no_such_data", "--output", str(out)])
    assert not out.exists()


def test_values_the_constructor_refuses_name_the_option(tmp_path, no_knn):
    for argv, message in [
        # The constructor's ValueError and TypeError, named by the option that caused them.
        (["--method", "mmcr", "--option", "momentum=2.0"], "--option momentum=2.0: MMCR refuses it: .*in \\[0, 1\\]"),
        (["--method", "simclr", "--option", "momentum=0.9"], "--option momentum=0.9: SimCLR refuses it: .*no momentum"),
        (["--method", "moco", "--option", "queue_size='big'"], "--option queue_size='big': MoCoV2 refuses it"),
    ]:
        out = tmp_path / argv[1]
        with pytest.raises(SystemExit, match="^keras-ssl: " + message) as raised:
            cli.main(["pretrain", *argv, *FAST, "--limit", "16", "--batch-size", "8", "--output", str(out)])
        assert "\n" not in str(raised.value.code) and not out.exists()


def _checkpoint(output, command):
    """A run directory holding a checkpoint of `command` (a dict as command.json holds it)."""
    folder = os.path.join(output, pretraining.CHECKPOINT)
    os.makedirs(os.path.join(folder, "ckpt-000001-000000000"))
    with open(os.path.join(folder, "ckpt-000001-000000000", STATE), "w") as f:
        json.dump({"epoch": 1, "batch": 0}, f)
    with open(os.path.join(folder, "command.json"), "w") as f:
        json.dump(command, f)


def test_options_are_part_of_the_command_a_checkpoint_resumes(tmp_path):
    out = str(tmp_path / "run")
    run = _args("--output", out, "--method", "mmcr", "--option", "momentum=0.99", "--option", "lmbda=0")
    _checkpoint(out, json.loads(json.dumps(pretraining._command(run))))
    # The same values, spelled and ordered otherwise: the same command, which resumes.
    same = _args("--output", out, "--method", "mmcr", "--option", "lmbda=0.0", "--option", "momentum=.99")
    assert pretraining._same_command_checkpoint(same)
    other = _args("--output", out, "--method", "mmcr", "--option", "momentum=0.9", "--option", "lmbda=0")
    assert not pretraining._same_command_checkpoint(other)
    with pytest.raises(SystemExit, match="another command .*--option .*0.99.* there, .*0.9.* here"):
        pretraining._resume_plan(other, os.path.join(out, "encoder.keras"), team=None)
    more = _args(
        "--output", out, "--method", "mmcr", "--option", "momentum=0.99", "--option", "lmbda=0", "--local-crops", "2"
    )
    assert not pretraining._same_command_checkpoint(more)


def test_a_command_recorded_before_these_flags_still_resumes(tmp_path):
    out = str(tmp_path / "old")
    args = _args("--output", out, "--epochs", "2")
    old = {
        k: v
        for k, v in json.loads(json.dumps(pretraining._command(args))).items()
        if k not in ("option", "local_crops")
    }
    _checkpoint(out, old)
    assert pretraining._same_command_checkpoint(args)
    assert not pretraining._same_command_checkpoint(_args("--output", out, "--epochs", "2", "--option", "a=1"))


def test_run_pretrain_takes_options_as_a_dict_or_texts(tmp_path):
    expected = cli.build_parser().parse_args(
        ["pretrain", "--output", str(tmp_path), "--option", "momentum=0.99", "--option", "loss='dcl'"]
    )
    assert pretraining._pretrain_args(tmp_path, option={"momentum": 0.99, "loss": "dcl"}) == expected
    assert pretraining._pretrain_args(tmp_path, option=["momentum=0.99", "loss='dcl'"]) == expected
    assert building._option_items(expected.option) == {"momentum": 0.99, "loss": "dcl"}
