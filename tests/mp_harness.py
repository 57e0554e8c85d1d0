"""What the multi-process tests share: starting worker processes on 127.0.0.1, reading their
results, and comparing a cluster's run with one process's (tests/test_multiprocess_jax.py and
tests/test_multiprocess_tf.py)."""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
from conftest import BACKEND

METHODS = ("simclr", "byol", "moco", "swav")
LR = 0.1  # the workers' SGD learning rate
HEARTBEAT = 10  # seconds before JAX's coordinator declares a silent process lost
HERE = os.path.dirname(os.path.abspath(__file__))


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(out, worker, mode, index, env):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE), KERAS_BACKEND=BACKEND, **env)
    if mode == "multi":
        env["KERAS_SSL_MP_LINGER"] = "1"  # train on after the results, for the kill
    log = open(os.path.join(out, f"{mode}_{index}.log"), "w")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(HERE, worker), out, mode], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    proc.log_path = log.name
    return proc


def log_of(proc):
    with open(proc.log_path) as f:
        return f.read()


def _wait(condition, procs, limit, what):
    deadline = time.time() + limit
    while not condition():
        for p in procs:
            if p.poll() is not None and not condition():
                raise AssertionError(f"{what}: a worker exited ({p.returncode}):\n{log_of(p)[-4000:]}")
        assert time.time() < deadline, f"{what}: not within {limit} s:\n" + "\n".join(log_of(p)[-2000:] for p in procs)
        time.sleep(0.2)


def _load(path):
    with np.load(path) as f:
        return dict(f)


def group(results, method, key):
    """The arrays a worker saved under `method/key/<i>`, in order."""
    prefix = f"{method}/{key}/"
    keys = sorted((k for k in results if k.startswith(prefix)), key=lambda k: int(k[len(prefix) :]))
    return [results[k] for k in keys]


def run_cluster(out, worker, cluster_env, grace=60):
    """Runs 2 `multi` workers and the `single` reference; kills worker 1 once both train on; yields the results."""
    workers = [_start(out, worker, "multi", i, cluster_env(i)) for i in range(2)]
    single = _start(out, worker, "single", 0, {})
    try:
        files = [os.path.join(out, f"multi_{i}.npz") for i in range(2)]
        _wait(lambda: all(os.path.exists(f) for f in files), workers, 400, "the 2-process run")
        _wait(lambda: all("STEP 0" in log_of(p) for p in workers), workers, 60, "the steps after the results")
        workers[1].send_signal(signal.SIGKILL)
        killed = time.time()
        try:
            workers[0].wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        survivor = {"returncode": workers[0].poll(), "seconds": time.time() - killed, "log": log_of(workers[0])}
        with open(os.path.join(out, "survivor.txt"), "w") as f:  # for a reader of the logs
            f.write(f"rc={survivor['returncode']} after {survivor['seconds']:.1f} s\n")
        assert single.wait(timeout=400) == 0, log_of(single)[-4000:]
        yield {
            "multi": [_load(f) for f in files],
            "single": _load(os.path.join(out, "single_0.npz")),
            "survivor": survivor,
        }
    finally:
        for p in workers + [single]:
            if p.poll() is None:
                p.kill()
                p.wait()


def check_equal_to_one_process(run, method):
    """Loss, first-step gradients and every weight after 3 steps: 2 processes against 1."""
    one, two = run["single"], run["multi"][0]
    assert two["meta/count_seconds"][0] == 2 and one["meta/count_seconds"][0] == 1
    for a, b in zip(group(one, method, "w0"), group(two, method, "w0")):
        np.testing.assert_array_equal(a, b)  # the same initial weights
    assert int(group(one, method, "steps")[0]) == int(group(two, method, "steps")[0]) == 3
    loss_one, loss_two = group(one, method, "loss")[0], group(two, method, "loss")[0]
    assert np.all(np.isfinite(loss_one)) and loss_one.shape == (3,)
    np.testing.assert_allclose(loss_two, loss_one, rtol=1e-5, atol=1e-6)
    # first-step gradients: SGD's update (w0 - w1) / lr
    grads_one = [(a - b) / LR for a, b in zip(group(one, method, "w0"), group(one, method, "w1"))]
    grads_two = [(a - b) / LR for a, b in zip(group(two, method, "w0"), group(two, method, "w1"))]
    scale = max(float(np.abs(g).max()) for g in grads_one)
    assert scale > 1e-3, "no gradient to compare"
    for g1, g2 in zip(grads_one, grads_two):
        np.testing.assert_allclose(g2, g1, atol=1e-4 * max(1.0, scale), rtol=0)
    # every weight after 3 steps: trainable, BatchNorm statistics, targets, queues, counters
    for key in ("w3", "state"):
        one_weights, two_weights = group(one, method, key), group(two, method, key)
        assert len(one_weights) == len(two_weights) > 0
        for a, b in zip(one_weights, two_weights):
            np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-4)


def check_same_on_both_processes(run, method):
    first, second = run["multi"]
    assert first["meta/count_seconds"][0] == second["meta/count_seconds"][0] == 2
    for key in ("loss", "w3", "state"):
        for a, b in zip(group(first, method, key), group(second, method, key)):
            np.testing.assert_array_equal(a, b)


def check_queues(run, method):
    # 3 global batches of 8 keys entered each 16-row queue: it wrapped once, the pointer is at 24 % 16
    banks = {"moco": 1, "swav": 2}[method]
    for results in (*run["multi"], run["single"]):
        np.testing.assert_array_equal(group(results, method, "queue_counts")[0], [[8, 16]] * banks)
    # the same rows on both processes and in the one-process run (which saw every process's keys)
    queues = [group(r, method, "queues") for r in (*run["multi"], run["single"])]
    assert len(queues[0]) == banks
    for a, b, c in zip(*queues):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, atol=2e-5)


def check_survivor(run, lost, within):
    survivor = run["survivor"]
    tail = survivor["log"][-3000:]
    assert survivor["returncode"] is not None, f"process 0 still runs after process 1 died:\n{tail}"
    assert survivor["returncode"] != 0, tail
    assert survivor["seconds"] < within, (survivor["seconds"], tail)
    assert lost in survivor["log"], tail
