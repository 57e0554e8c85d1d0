"""Two real processes on 127.0.0.1 compute what one process computes on the same global batch (JAX).

`mp_jax_worker.py` runs twice in `multi` mode (`jax.distributed` through
`keras_ssl.backend.processes.initialize`, gloo collectives, one CPU device per
process, `data_parallel()` over the global mesh, each process feeding its rows
of every global batch of 8) and once in `single` mode (the reference: one
process, one device, no distribution, the whole global batches). SimCLR, BYOL,
MoCo v2 and SwAV train 3 SGD steps each from the same seed, with their own
random augmentations and BatchNorm: the jitted step sees the global batch, so
the same seeds draw the same views and BatchNorm's statistics are global.
Then process 1 is killed while both train, and process 0 must stop soon,
naming the lost process.
"""

import pytest
from conftest import BACKEND
from mp_harness import (
    HEARTBEAT,
    METHODS,
    check_equal_to_one_process,
    check_queues,
    check_same_on_both_processes,
    check_survivor,
    free_ports,
    run_cluster,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if BACKEND != "jax":
        pytest.skip("JAX's multi-process runtime (KERAS_BACKEND=jax)")
    (port,) = free_ports(1)

    def cluster_env(index):
        return dict(
            KERAS_SSL_COORDINATOR=f"127.0.0.1:{port}",
            KERAS_SSL_NUM_PROCESSES="2",
            KERAS_SSL_PROCESS_ID=str(index),
            KERAS_SSL_MP_HEARTBEAT=str(HEARTBEAT),
        )

    yield from run_cluster(str(tmp_path_factory.mktemp("multiprocess_jax")), "mp_jax_worker.py", cluster_env)


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_equal_one_process(run, method):
    check_equal_to_one_process(run, method)


@pytest.mark.parametrize("method", METHODS)
def test_both_processes_hold_the_same_state(run, method):
    check_same_on_both_processes(run, method)


@pytest.mark.parametrize("method", ("moco", "swav"))
def test_queues_hold_every_process_keys(run, method):
    check_queues(run, method)


def test_killed_process_stops_the_other(run):
    check_survivor(run, "Task 1 heartbeat timeout", within=3 * HEARTBEAT)
