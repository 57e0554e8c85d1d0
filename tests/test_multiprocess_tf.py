"""Two real TensorFlow workers on 127.0.0.1 compute what one process computes on the same global batch.

`mp_tf_worker.py` runs twice in `multi` mode (`MultiWorkerMirroredStrategy`
from `keras_ssl.backend.processes.multi_worker_strategy`, its `TF_CONFIG`
written from `KERAS_SSL_COORDINATOR`, one CPU replica per worker, each worker
feeding its rows of every global batch of 8, `SSLModel` gathering the declared
outputs across workers) and once in `single` mode (one process, one device,
no strategy). Each replica runs its own slice, so the models have no
BatchNorm and fixed views (see the worker). Then worker 1 is killed while
both train; worker 0 must stop, naming the lost worker. The checks are
tests/test_multiprocess_jax.py's.
"""

import pytest
from conftest import BACKEND
from mp_harness import (
    METHODS,
    check_equal_to_one_process,
    check_queues,
    check_same_on_both_processes,
    check_survivor,
    free_ports,
    run_cluster,
)

# TensorFlow's health check pings the workers every 30 s and gives up after 3 failed tries.
KILL_NOTICE = 60


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if BACKEND != "tensorflow":
        pytest.skip("TensorFlow's MultiWorkerMirroredStrategy (KERAS_BACKEND=tensorflow)")
    addresses = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))

    def cluster_env(index):
        return dict(
            KERAS_SSL_COORDINATOR=addresses,
            KERAS_SSL_NUM_PROCESSES="2",
            KERAS_SSL_PROCESS_ID=str(index),
            TF_CPP_MIN_LOG_LEVEL="1",
        )

    out = str(tmp_path_factory.mktemp("multiprocess_tf"))
    yield from run_cluster(out, "mp_tf_worker.py", cluster_env, grace=KILL_NOTICE + 10)


@pytest.mark.parametrize("method", METHODS)
def test_two_workers_equal_one_process(run, method):
    check_equal_to_one_process(run, method)


@pytest.mark.parametrize("method", METHODS)
def test_both_workers_hold_the_same_state(run, method):
    check_same_on_both_processes(run, method)


@pytest.mark.parametrize("method", ("moco", "swav"))
def test_queues_hold_every_worker_keys(run, method):
    check_queues(run, method)


def test_killed_worker_stops_the_other(run):
    check_survivor(run, "task:1", within=KILL_NOTICE)
