"""`keras-ssl pretrain` killed (SIGKILL) and rerun: it resumes and ends as the uninterrupted run.

The reference is the same command run without interruption; the kills are
real SIGKILLs of a subprocess, after a checkpoint and while publishing.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_ssl import cli

ARGS = [
    "pretrain",
    "--data",
    "digits",
    "--epochs",
    "3",
    "--batch-size",
    "64",
    "--limit",
    "256",
    "--width",
    "0.25",
    "--checkpoint-every",
    "2",
    "--knn-every",
    "1",
    "--no-plots",
    "--verbose",
    "0",
]
HERE = os.path.dirname(os.path.abspath(__file__))


def _killed(where, output):
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "kill_pretrain.py"), where, *ARGS, "--output", output],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == -9, done.stdout[-1000:] + done.stderr[-2000:]


def _history(folder):
    with open(os.path.join(folder, "history.json")) as f:
        return json.load(f)


def _weights(folder):
    return keras.saving.load_model(os.path.join(folder, "encoder.keras")).get_weights()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("whole") / "run")
    assert cli.main([*ARGS, "--output", out]) == 0
    assert not os.path.exists(os.path.join(out, "checkpoint")), "a finished run keeps no checkpoint"
    return out


def test_a_killed_pretrain_resumes_mid_epoch_and_ends_as_the_uninterrupted_run(uninterrupted, tmp_path, capsys):
    out = str(tmp_path / "run")
    _killed("checkpoint:3", out)  # checkpoints at epoch 1 step 2, epoch 2 start, epoch 2 step 2: killed there
    assert not os.path.exists(os.path.join(out, "encoder.keras"))
    assert cli.main([*ARGS, "--output", out]) == 0
    assert "resuming from epoch 2 of 3, after its step 2" in capsys.readouterr().out
    whole, resumed = _history(uninterrupted), _history(out)
    assert len(resumed["loss"]) == 3 and resumed["resumed_from"] == [1, 2]
    np.testing.assert_allclose(resumed["loss"], whole["loss"], rtol=1e-5)
    np.testing.assert_allclose(resumed["knn_top1"], whole["knn_top1"], atol=1e-6)
    for a, b in zip(_weights(uninterrupted), _weights(out)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_run_killed_while_publishing_is_refused_then_finished_by_the_same_command(uninterrupted, tmp_path, capsys):
    out = str(tmp_path / "run")
    _killed("publish:2", out)  # encoder.keras moved in, the rest not
    with pytest.raises(SystemExit, match="was being written when its pretrain stopped"):
        cli.main(["evaluate", out])
    with pytest.raises(SystemExit, match=r"another command \(--epochs 3 there, 4 here\)"):
        cli.main([*ARGS, "--output", out, "--epochs", "4"])
    assert cli.main([*ARGS, "--output", out]) == 0
    assert "resuming from epoch 3 of 3 (training was complete" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["data.json", "encoder.keras", "history.json", "model.keras", "run.json"]
    np.testing.assert_allclose(_history(out)["loss"], _history(uninterrupted)["loss"], rtol=1e-5)
    assert cli.main(["evaluate", out, "--k", "20"]) == 0


def test_a_file_replaced_after_publishing_is_refused(uninterrupted, tmp_path):
    out = tmp_path / "mixed"
    out.mkdir()
    for name in ("encoder.keras", "model.keras", "history.json", "data.json", "run.json"):
        (out / name).write_bytes(open(os.path.join(uninterrupted, name), "rb").read())
    keras.saving.load_model(os.path.join(uninterrupted, "encoder.keras")).save(str(out / "encoder.keras"))
    with pytest.raises(SystemExit, match="is not the file of run"):
        cli.main(["evaluate", str(out)])
