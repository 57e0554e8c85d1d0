"""MemoryBank: FIFO semantics against NumPy, wrap-around, copies, config."""

import keras
import numpy as np
import pytest

from keras_ssl.layers.memory import MemoryBank


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_starts_as_random_unit_rows_and_empty():
    bank = MemoryBank(6, 4, seed=0)
    queue = np.array(bank.queue)
    np.testing.assert_allclose(np.linalg.norm(queue, axis=1), 1.0, atol=1e-5)
    assert np.abs(queue - queue[0]).max() > 0.1  # rows differ
    assert int(bank.pointer) == 0 and int(bank.filled) == 0 and not bool(bank.is_full())
    assert not any(v.trainable for v in bank.weights)


def test_fifo_with_wrap_around_matches_numpy():
    size, batch = 5, 3
    bank = MemoryBank(size, 4, seed=1)
    expected = np.array(bank.queue)
    pointer, rng = 0, np.random.default_rng(0)
    for step in range(4):
        keys = rng.normal(size=(batch, 4)).astype("float32")
        bank.enqueue(keys)
        for i in range(batch):  # one row at a time: no row is dropped on wrap-around
            expected[(pointer + i) % size] = unit(keys)[i]
        pointer = (pointer + batch) % size
        np.testing.assert_allclose(np.array(bank.queue), expected, atol=1e-6)
        assert int(bank.pointer) == pointer
        assert int(bank.filled) == min((step + 1) * batch, size)
        assert bool(bank.is_full()) == ((step + 1) * batch >= size)


def test_read_is_a_copy_unchanged_by_a_later_enqueue():
    bank = MemoryBank(4, 3, seed=2)
    before = np.array(bank.queue)
    snapshot = bank.read()
    bank.enqueue(np.ones((2, 3), "float32"))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(snapshot), before)
    np.testing.assert_allclose(np.array(bank.queue)[:2], 1 / np.sqrt(3), atol=1e-6)


def test_batch_larger_than_queue_is_rejected():
    bank = MemoryBank(4, 3)
    with pytest.raises(ValueError, match=r"\(6 keys\).*\(4 rows\)"):
        bank.enqueue(np.ones((6, 3), "float32"))
    assert int(bank.pointer) == 0


@pytest.mark.parametrize("size, dim", [(0, 4), (4, 0)])
def test_bad_sizes_are_rejected(size, dim):
    with pytest.raises(ValueError, match="size"):
        MemoryBank(size, dim)


def test_config_round_trip_and_weights():
    bank = MemoryBank(5, 3, seed=3, name="bank")
    bank.enqueue(np.eye(3, dtype="float32"))
    clone = MemoryBank.from_config(bank.get_config())
    assert (clone.size, clone.dim, clone.seed) == (5, 3, 3)
    clone.set_weights(bank.get_weights())
    np.testing.assert_array_equal(np.array(clone.queue), np.array(bank.queue))
    assert int(clone.pointer) == 3 and int(clone.filled) == 3
