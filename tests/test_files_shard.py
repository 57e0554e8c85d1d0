"""ImageFiles split by process (`shard=(index, count)`), checked without starting processes.

Each file is a constant image whose value is its position in the file list, so a batch's pixels say
which files were read, independently of the indices the stream reports. Over an epoch the two
processes' shards must read every file of the full global batches exactly once, in equal numbers
of batches; their batches, concatenated in process order, must be one process's batches of the
global size (the same seed gives the same global permutation on every process); the next epoch
must draw another permutation.
"""

import os

import numpy as np
import pytest

from keras_ssl import data

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    paths = []
    for i in range(24):
        path = os.path.join(root, f"{i:02d}.png")
        Image.fromarray(np.full((4, 4, 3), 10 * i, "uint8")).save(path)
        paths.append(path)
    return paths


def stream(paths, shard, **kwargs):
    kwargs = dict(dict(image_size=4, batch_size=4, seed=3, with_indices=True, workers=1), **kwargs)
    return data.ImageFiles(paths, shard=shard, **kwargs)


def epoch(s):
    """Every batch of the epoch: (positions read, from the pixels; positions reported)."""
    batches = [s[i] for i in range(len(s))]
    return [(x[:, 0, 0, 0] // 10, index) for x, index in batches]


def test_two_shards_read_every_file_once_in_equal_batches(files):
    shards = [stream(files, (p, 2)) for p in range(2)]
    assert len(shards[0]) == len(shards[1]) == 24 // 8
    read = [epoch(s) for s in shards]
    for batches in read:
        for pixels, reported in batches:
            np.testing.assert_array_equal(pixels, reported)  # `with_indices`: positions in the whole list
            assert len(pixels) == 4
    everything = np.concatenate([pixels for batches in read for pixels, _ in batches])
    np.testing.assert_array_equal(np.sort(everything), np.arange(24))  # each file once, none left out


def test_the_shards_split_one_global_permutation(files):
    one = epoch(stream(files, False, batch_size=8))  # one process, the global batch of 8
    shards = [epoch(stream(files, (p, 2))) for p in range(2)]
    assert len(one) == len(shards[0]) == len(shards[1])
    for t, (whole, _) in enumerate(one):
        np.testing.assert_array_equal(np.concatenate([shards[0][t][0], shards[1][t][0]]), whole)
    assert not np.array_equal(one[0][0], np.arange(8))  # shuffled


def test_next_epoch_reshuffles_and_still_reads_every_file_once(files):
    shards = [stream(files, (p, 2)) for p in range(2)]
    first = [np.concatenate([px for px, _ in epoch(s)]) for s in shards]
    for s in shards:
        s.on_epoch_end()  # what Keras calls between epochs (`set_epoch(1)` gives the same)
    second = [np.concatenate([px for px, _ in epoch(s)]) for s in shards]
    assert not np.array_equal(first[0], second[0])
    np.testing.assert_array_equal(np.sort(np.concatenate(second)), np.arange(24))
    again = stream(files, (1, 2))
    again.set_epoch(1)  # a resumed process
    np.testing.assert_array_equal(np.concatenate([px for px, _ in epoch(again)]), second[1])


def test_remainder_dropped_or_padded_with_equal_batches(files):
    some = files[:21]  # global batches of 8: 2 full, 5 files over
    dropped = [np.concatenate([px for px, _ in epoch(stream(some, (p, 2)))]) for p in range(2)]
    assert len(dropped[0]) == len(dropped[1]) == 8
    assert len(np.unique(np.concatenate(dropped))) == 16  # none twice; the 5 over wait for another epoch
    padded = [stream(some, (p, 2), drop_remainder=False, shuffle=False) for p in range(2)]
    assert len(padded[0]) == len(padded[1]) == 3
    read = np.concatenate([np.concatenate([px for px, _ in epoch(s)]) for s in padded])
    counts = np.bincount(read, minlength=21)
    assert counts.sum() == 24 and counts.min() == 1
    np.testing.assert_array_equal(np.flatnonzero(counts == 2), [0, 1, 2])  # padded from the order's start


def test_labels_follow_their_files_in_a_shard(files):
    labels = np.arange(24) % 5
    s = data.ImageFiles(files, labels, image_size=4, batch_size=4, seed=1, with_labels=True, shard=(1, 2))
    for i in range(len(s)):
        x, y = s[i]
        np.testing.assert_array_equal(y, (x[:, 0, 0, 0] // 10) % 5)


def test_default_shard_and_bad_shards(files):
    assert stream(files, None).shard == (0, 1)  # one process: every file
    alone = stream(files, None)
    assert alone.to_arrays()[0].shape[0] == 24 and stream(files, (1, 2)).to_arrays()[0].shape[0] == 24
    assert stream(files, (1, 2)).subset(range(16)).shard == (1, 2)
    for bad in ((2, 2), (0, 0), "0,2", 3):
        with pytest.raises(ValueError, match="shard"):
            stream(files, bad)
    with pytest.raises(ValueError, match=r"no full batch of 16 \(2 process\(es\) x 8\)"):
        stream(files[:12], (0, 2), batch_size=8)
