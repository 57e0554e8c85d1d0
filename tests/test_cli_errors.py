"""Errors under the CLI name the CLI's flags, not the Python arguments (issue 33, finding 4)."""

import numpy as np
import pytest

from keras_ssl import cli, data
from keras_ssl.cli import rundata


def float_npz_0_255(path):
    """An .npz of float32 images with values in [0, 255], as a user's own conversion leaves them."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(48, 16, 16, 1)).astype("float32")
    y = np.arange(48) % 4
    np.savez(path, x_train=x[:32], y_train=y[:32], x_test=x[32:], y_test=y[32:])
    return str(path)


def test_float_npz_in_0_255_names_the_value_range_flag(tmp_path):
    data_path = float_npz_0_255(tmp_path / "floats.npz")
    out = tmp_path / "run"
    argv = ["pretrain", "--data", data_path, "--output", str(out), "--epochs", "1", "--batch-size", "16"]
    with pytest.raises(SystemExit) as raised:
        cli.main(argv + ["--no-plots", "--verbose", "0"])
    message = str(raised.value.code)
    assert message.startswith("keras-ssl: ") and "\n" not in message
    assert "outside" in message and "--value-range 0,255" in message
    assert "value_range=" not in message
    assert not out.exists()  # refused before anything was written
    # the flag it names is the fix: parsed as pretrain parses it, the images pass the check that failed
    spec = rundata._data_spec(cli.build_parser().parse_args(argv + ["--value-range", "0,255"]))
    assert data.check_images(np.load(data_path)["x_train"], value_range=spec["value_range"]) == (0.0, 255.0)


class Fixable(ValueError):
    """An error carrying the argument that fixes it, as `data.FixableError` does."""

    def __init__(self, template, argument, value):
        self.template, self.argument, self.value = template, argument, value
        super().__init__(template.replace("{fix}", f"{argument}={value!r}"))


@pytest.mark.parametrize(
    "command, argument, value, expected",
    [
        ("evaluate", "value_range", (0, 255), "--value-range 0,255"),
        ("pretrain", "value_range", [0.0, 1.5], "--value-range 0,1.5"),
        ("pretrain", "image_size", 28, "--image-size 28"),
        ("pretrain", "learning_rate", 1e-3, "--learning-rate 0.001"),
        ("pretrain", "no_flip", True, "--no-flip"),
        ("evaluate", "crop_scale", 0.5, "crop_scale=0.5"),  # no such flag in evaluate: the Python form stays
    ],
)
def test_an_error_carrying_its_argument_is_reported_with_the_commands_flag(
    command, argument, value, expected, monkeypatch
):
    def failing(args):
        raise Fixable("the images need {fix} here.", argument, value)

    monkeypatch.setitem(cli._COMMANDS, command, failing)
    argv = [command, "model.keras"] if command == "evaluate" else [command]
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert str(raised.value.code) == f"keras-ssl: the images need {expected} here."


def test_other_errors_pass_through_unchanged(monkeypatch):
    def failing(args):
        raise ValueError("value_range=(0, 1) is wrong for reasons no flag fixes")

    monkeypatch.setitem(cli._COMMANDS, "pretrain", failing)
    with pytest.raises(ValueError, match=r"value_range=\(0, 1\) is wrong"):
        cli.main(["pretrain"])
