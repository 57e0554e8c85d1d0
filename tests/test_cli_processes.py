"""`keras-ssl pretrain --num-processes 2`: two real processes on 127.0.0.1 train one run, on the current backend.

A tiny SimCLR (a folder of 48 PNG files, streamed; on TensorFlow, whose workers do not stream yet, the same
images in an .npz; global batch 8, 2 epochs of 6 steps, the tiny backbone at width 0.25) is launched with
process 1 SIGKILLed after the first checkpoint: the launch must fail naming it and keep process 0's
checkpoint; the same launch again must resume from it and end with one run, written by process 0. The
reference is independent: on JAX, whose step sees the global batch (so BatchNorm statistics are global and
the same seeds draw the same views), the killed and resumed 2-process run must end with the losses and
weights of an uninterrupted one-process run of the same command (float32 tolerance). On PyTorch and
TensorFlow each process augments and normalises its own rows, so no one-process run computes the same: on
PyTorch the reference is an uninterrupted 2-process run (exact resume), on TensorFlow, whose distributed fit
shuffles arrays from the global seed, the checks are the kill, the resume and the one writer.

Which files each process reads is checked without processes, on the CLI's own path (`rundata._open_data`
then `launch.fit_rows` for each process of a team of 2): every file is identified by its pixels, against an
independent decode (Pillow) of the folder, and counted once per read.
"""

import collections
import contextlib
import io
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND
from PIL import Image

from keras_ssl import cli
from keras_ssl.cli import launch, rundata
from keras_ssl.methods import SimCLR

HERE = os.path.dirname(os.path.abspath(__file__))
FINISHED = ["data.json", "encoder.keras", "history.json", "model.keras", "run.json"]


@pytest.fixture(scope="module")
def args(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_processes")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (48, 1, 1, 3))
    images = np.clip(base + rng.integers(-40, 40, (48, 16, 16, 3)), 0, 255).astype("uint8")
    os.makedirs(folder / "images")
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / "images" / f"{i:02d}.png")
    np.savez(folder / "tiny.npz", x_train=images)  # TensorFlow's workers do not stream yet
    data = ["--data", str(folder / ("tiny.npz" if BACKEND == "tensorflow" else "images")), "--image-size", "16"]
    flags = [*data, "--epochs", "2", "--batch-size", "8", "--width", "0.25"]
    return folder, ["pretrain", *flags, "--knn-every", "0", "--no-plots", "--verbose", "0"]


def _launch(argv, command=None):
    """Runs the launcher here (its processes are real ones); its status or exit message, and the pids."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            parsed = cli.build_parser().parse_args(argv)
            status = launch.launch(parsed, SimCLR, command) if command else cli.main(argv)
        except SystemExit as e:
            status = e.code
    pids = re.search(r"pids ([\d ]+) \(", printed.getvalue())
    return status, [int(p) for p in pids.group(1).split()] if pids else []


def _history(folder):
    with open(os.path.join(folder, "history.json")) as f:
        return json.load(f)


def _weights(folder):
    return keras.saving.load_model(os.path.join(folder, "encoder.keras")).get_weights()


def _reference(folder, argv):
    """An independent run of the same command: one process on JAX, two uninterrupted on PyTorch, or None."""
    out = str(folder / "reference")
    with contextlib.redirect_stdout(io.StringIO()):
        if BACKEND == "jax":  # the step sees the global batch: one process computes the same
            assert cli.main([*argv, "--output", out]) == 0
            return out
        if BACKEND == "torch":  # each process draws its own augmentations: the resume must give each its seeds back
            assert _launch([*argv, "--num-processes", "2", "--output", out])[0] == 0
            return out
    return None  # TensorFlow's distributed fit shuffles arrays from the global seed: a resume sees other batches


def test_a_lost_process_is_named_and_the_rerun_resumes_as_one_run(args):
    # One test, not several sharing a fixture: under pytest-xdist each worker would launch its own runs.
    folder, argv = args
    out = str(folder / "two")
    run = [*argv, "--num-processes", "2", "--output", out]
    killed, _ = _launch(run, command=[sys.executable, os.path.join(HERE, "mp_cli_worker.py"), "1"])
    assert isinstance(killed, str) and "process 1 of 2 was lost (killed by signal 9, SIGKILL)" in killed, killed
    assert "rerun the same command to resume from the last checkpoint" in killed
    saved = sorted(name for name in os.listdir(os.path.join(out, "checkpoint")) if not name.startswith("."))
    assert saved == ["ckpt-000001-000000000", "command.json"]  # epoch 1's, written by process 0
    assert not os.path.exists(os.path.join(out, "encoder.keras"))

    status, pids = _launch(run)
    assert status == 0 and len(pids) == 2, status
    assert sorted(os.listdir(out)) == FINISHED  # no lock, no checkpoint, no file of a second writer
    with open(os.path.join(out, "run.json")) as f:
        assert json.load(f)["run_id"].endswith(f"-{pids[0]}")  # published by process 0
    history = _history(out)
    assert history["resumed_from"] == [1, 0] and len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))

    reference = _reference(folder, argv)
    if reference is not None:
        np.testing.assert_allclose(history["loss"], _history(reference)["loss"], rtol=1e-5, atol=1e-6)
        # A tenth of one Adam step (--learning-rate 2e-3): Adam turns float32 noise in a near-zero gradient
        # (another order of the sums over 2 processes) into a visible change of that weight.
        for a, b in zip(_weights(out), _weights(reference)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-4)


def test_a_second_launch_on_a_locked_run_fails_naming_the_first(args, tmp_path):
    _, argv = args
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # stands for a running launch
    try:
        (tmp_path / ".lock").write_text(str(other.pid))
        status, pids = _launch([*argv, "--num-processes", "2", "--output", str(tmp_path)])
    finally:
        other.kill()
        other.wait()
    assert f"is in use by another keras-ssl pretrain (pid {other.pid})" in str(status) and pids == []


def test_the_launcher_refuses_what_processes_cannot_share(args, tmp_path):
    _, argv = args
    refused = [
        (["--batch-size", "9"], "--batch-size 9 is the global batch: it must be a multiple of the 2 processes"),
        (["--method", "supcon"], "--method supcon keeps a label or an index with each image"),
    ]
    if BACKEND == "tensorflow":
        refused.append((["--data", HERE], "is streamed from files, which TensorFlow's workers do not share out yet"))
    for flags, expected in refused:
        status, pids = _launch([*argv, *flags, "--num-processes", "2", "--output", str(tmp_path / "unused")])
        assert expected in str(status) and pids == [], status
    assert not os.path.exists(tmp_path / "unused")


def test_the_processes_read_every_file_once_an_epoch_in_the_global_order(args):
    folder, argv = args
    argv = [*argv, "--data", str(folder / "images")]
    names = sorted(os.listdir(folder / "images"))
    decoded = {np.asarray(Image.open(folder / "images" / n)).tobytes(): n for n in names}  # independent of keras_ssl
    assert len(decoded) == 48
    spec = rundata._data_spec(cli.build_parser().parse_args(argv))
    one = rundata._open_data(spec, batch_size=8, training=True).fit  # what `pretrain` opens, whatever the processes
    team = [launch.Team(i == 0, i, 2, contextlib.nullcontext, True, None) for i in range(2)]
    parts = [launch.fit_rows(t, one, None, seed=0)[0] for t in team]
    for epoch in (0, 1):
        read = collections.Counter()
        for p in [one, *parts]:
            p.set_epoch(epoch)
        assert parts[0].num_batches == parts[1].num_batches == one.num_batches == 6
        for step in range(6):
            rows = []
            for p in parts:
                (x,) = p[step]
                assert x.shape == (4, 16, 16, 3), x.shape  # --batch-size // the processes
                rows.append(x)
                read.update(decoded[image.tobytes()] for image in x)
            np.testing.assert_array_equal(np.concatenate(rows), one[step][0])  # the one-process batch
        assert sorted(read) == names and set(read.values()) == {1}, read  # every file once, over the processes
