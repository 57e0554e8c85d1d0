"""What the multi-process workers (tests/mp_jax_worker.py, mp_tf_worker.py) share: training a method a
few steps while recording what tests/mp_harness.py compares, writing it, then training on for the kill."""

import os
import sys
import time

import keras
import numpy as np


def numpy(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def train_and_record(results, name, model, batch_at, batch_size, steps):
    """`steps` fits of one batch each (`batch_at(step)`), recording weights, losses and step state."""
    results[f"{name}/w0"] = numpy(model.trainable_variables)
    losses = []
    for step in range(steps):
        history = model.fit(batch_at(step), batch_size=batch_size, shuffle=False, verbose=0)
        losses.append(history.history["loss"][0])
        if step == 0:
            results[f"{name}/w1"] = numpy(model.trainable_variables)
    results[f"{name}/loss"] = [np.array(losses)]
    results[f"{name}/w3"] = numpy(model.trainable_variables)
    results[f"{name}/state"] = numpy(model.non_trainable_variables)
    results[f"{name}/steps"] = [np.array(int(keras.ops.convert_to_numpy(model.step)))]
    banks = [model.queue] if name == "moco" else list(getattr(model, "queues", []))
    results[f"{name}/queues"] = numpy([bank.queue for bank in banks])
    results[f"{name}/queue_counts"] = [np.array([numpy([b.pointer, b.filled]) for b in banks]).reshape(-1, 2)]


def save_then_linger(out, mode, index, results, count, started, fit_once, who):
    """Writes the results atomically; with KERAS_SSL_MP_LINGER, trains on until another process dies."""
    flat = {f"{key}/{i}": value for key, values in results.items() for i, value in enumerate(values)}
    flat["meta/count_seconds"] = np.array([count, time.time() - started])
    np.savez(os.path.join(out, f"{mode}_{index}.tmp.npz"), **flat)
    os.replace(os.path.join(out, f"{mode}_{index}.tmp.npz"), os.path.join(out, f"{mode}_{index}.npz"))
    print("DONE", flush=True)
    if os.environ.get("KERAS_SSL_MP_LINGER"):
        # Steps until another process dies; a bound so a hang cannot outlive the test.
        for step in range(10_000):
            fit_once()
            print(f"STEP {step}", flush=True)
            if time.time() - started > 240:
                sys.exit(f"{who}: still running after 240 s")
