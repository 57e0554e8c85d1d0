"""PyTorch across OS processes (`torch.distributed`, gloo on 127.0.0.1) computes what one process computes.

One launch (tests/mp_torch_worker.py): ranks 0 and 1 of a 2-process group, and a reference
process without a group, train SimCLR, BYOL, MoCo v2, SwAV and DINO for 3 steps on the same
global batches of 8 (4 per rank) from the same initial weights (rank 1 is built from another
seed and must receive rank 0's). The independent reference is the one-process run: losses,
first-step gradients, weights and step state (targets, queues, DINO's centre) after 3 steps
must agree to float32 rounding. A gather whose backward keeps only the local gradient (or
averages) gives half the gradient here and fails. "syncbn" is SimCLR on an encoder with BatchNorm
that the ranks synchronise (`layers.synchronize_batch_norm`): it must equal the reference, plain
Keras BatchNorm on the global batch, while "localbn" (the ranks' per-process statistics) must not. Then rank 1 kills itself mid-run: rank 0
must fail within seconds with an error naming process 1, not hang.
"""

import glob
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "torch", reason="torch.distributed: the PyTorch backend's test")

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp_torch_worker.py")
METHODS = ("simclr", "byol", "mocov2", "swav", "dino", "syncbn")
TIMEOUT_S = 300


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mp_torch"))
    port = _free_port()
    root = os.path.dirname(os.path.dirname(WORKER))
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=root, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    procs, logs = {}, {}
    for role in ("0", "1", "reference"):
        with open(os.path.join(out, f"log_{role}.txt"), "w") as log:  # files, not pipes: nothing blocks on a full pipe
            procs[role] = subprocess.Popen(
                [sys.executable, WORKER, role, str(port), out], env=env, stdout=log, stderr=log
            )
    deadline = time.time() + TIMEOUT_S
    try:
        for proc in procs.values():
            try:
                proc.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()  # the tests then fail on the missing results, with the log
                proc.wait()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    for role in procs:
        with open(os.path.join(out, f"log_{role}.txt")) as f:
            logs[role] = f.read()
    return out, logs, {role: proc.returncode for role, proc in procs.items()}


def _load(out, role, logs):
    path = os.path.join(out, f"{role}.npz")
    assert os.path.exists(path), f"process {role} wrote no results:\n{logs[role][-4000:]}"
    data = np.load(path)

    def listed(name, key):
        return [data[f"{name}/{key}/{i}"] for i in range(int(data[f"{name}/{key}/n"]))]

    return data, listed


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_equal_one_process(run, method):
    out, logs, _ = run
    ref, ref_list = _load(out, "reference", logs)
    assert int(ref["num_replicas"]) == 1
    for rank in ("0", "1"):
        got, got_list = _load(out, rank, logs)
        assert int(got["num_replicas"]) == 2
        loss = got[f"{method}/loss"]
        assert loss.shape == (3,) and np.all(np.isfinite(loss))
        np.testing.assert_allclose(loss, ref[f"{method}/loss"], rtol=2e-5, atol=2e-6, err_msg=f"loss, rank {rank}")
        grads, ref_grads = got_list(method, "grads"), ref_list(method, "grads")
        assert len(grads) == len(ref_grads) > 0
        scale = max(float(np.abs(g).max()) for g in ref_grads)
        assert scale > 1e-4  # a real gradient was compared
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=2e-6 * scale, err_msg=f"gradient {i}, rank {rank}")
        for key in ("weights", "state"):
            mine, theirs = got_list(method, key), ref_list(method, key)
            assert len(mine) == len(theirs) > 0
            for i, (a, b) in enumerate(zip(mine, theirs)):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"{key} {i}, rank {rank}")


def test_per_process_batch_norm_differs_from_the_global_batch(run):
    """Without the switch each process normalises its own 4 rows: "syncbn"'s equality above says something."""
    out, logs, _ = run
    ref, ref_list = _load(out, "reference", logs)
    got, got_list = _load(out, "0", logs)
    assert not np.allclose(got["localbn/loss"], ref["syncbn/loss"], rtol=1e-3, atol=1e-4)
    paths = [str(p) for p in ref_list("syncbn", "state_paths")]
    moving = [i for i, p in enumerate(paths) if "moving_" in p]
    assert len(moving) == 4  # two layers' mean and variance
    local, synced = got_list("localbn", "state"), ref_list("syncbn", "state")
    for i in moving:  # they moved from their start (mean 0, variance 1), so their equality is a check
        assert np.abs(synced[i] - (1.0 if "moving_variance" in paths[i] else 0.0)).max() > 1e-2, paths[i]
    assert any(not np.allclose(local[i], synced[i], rtol=1e-3, atol=1e-4) for i in moving)


def test_step_state_moved(run):
    """Queues, targets and DINO's centre changed in the 3 steps, so their equality above says something."""
    out, logs, _ = run
    _, listed = _load(out, "0", logs)

    def state(method, suffix):
        paths = [str(p) for p in listed(method, "state_paths")]
        return [v for p, v in zip(paths, listed(method, "state")) if p.endswith(suffix)]

    # 3 steps of 8 global keys (not 4 local ones): MoCo's queue of 10 and SwAV's two of 16 went round
    assert [int(v) for v in state("mocov2", "/pointer")] == [24 % 10]
    assert [int(v) for v in state("swav", "/pointer")] == [24 % 16] * 2
    assert np.abs(state("dino", "/center")[0]).max() > 0  # starts at zero
    assert len(state("byol", "kernel")) >= 3  # the target network's copies


def test_lost_process_is_named_quickly(run):
    out, logs, codes = run
    killed = glob.glob(os.path.join(out, "killed_1.json"))
    assert killed, f"rank 1 did not reach the kill:\n{logs['1'][-3000:]}"
    assert codes["1"] == -9
    assert codes["0"] not in (0, None), "rank 0 went on after losing rank 1"
    error_path = os.path.join(out, "error_0.json")
    assert os.path.exists(error_path), f"rank 0 failed without LostProcessError:\n{logs['0'][-3000:]}"
    with open(error_path) as f:
        error = json.load(f)
    with open(killed[0]) as f:
        killed_at = json.load(f)["time"]
    assert "process 1 was lost" in error["message"], error["message"]
    assert "LostProcessError" in logs["0"] and "process 1 was lost" in logs["0"]
    assert error["time"] - killed_at < 30, error
