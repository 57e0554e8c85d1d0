"""A `tf.data` batch smaller than the method's minimum (issue 33, finding 3), on every backend.

Where the smallest batch is known from the pipeline (`batch` over a source of known length), `fit`
refuses before the first step, naming `drop_remainder=True`; where it is not (unknown length, or a
step such as `take` after `batch`), the short batches are skipped with a warning that counts the
images, and the epoch completes. The reference is the arithmetic of 9 (17) images in batches of 4 (8).
"""

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder

tf = pytest.importorskip("tensorflow")

from keras_ssl import keras_compat
from keras_ssl.methods import BarlowTwins, SimCLR

NINE = random_images(9)


def nine():
    return tf.data.Dataset.from_tensor_slices(NINE)


def _double(x):
    return x * 2


# Pipelines whose smallest batch `keras_compat.smallest_batch` reads from the `batch` step, and those where it
# must answer None (it cannot know without reading the data).
KNOWN = {
    "batch": lambda: nine().batch(4),
    "drop_remainder": lambda: nine().batch(4, drop_remainder=True),
    "exact": lambda: nine().batch(3),
    "map, batch, map, prefetch": lambda: nine().map(_double).batch(4).map(_double).prefetch(2),
    "shuffle, batch, cache, repeat": lambda: nine().shuffle(9, seed=0).batch(4).cache().repeat(2),
    "parallel batch": lambda: nine().batch(4, num_parallel_calls=2),
    "padded batch": lambda: nine().padded_batch(4),
    "batch, shuffle, options": lambda: nine().batch(4).shuffle(3, seed=0).with_options(tf.data.Options()),
    "one short batch": lambda: nine().take(3).batch(4),
    "repeat then batch (endless)": lambda: nine().repeat().batch(4),
}
UNKNOWN = {
    "filter, batch": lambda: nine().filter(lambda x: True).batch(4),
    "batch, take": lambda: nine().batch(4).take(2),
    "batch, filter": lambda: nine().batch(4).filter(lambda x: True),
    "zip": lambda: tf.data.Dataset.zip(nine().batch(4), nine().batch(4)),
}


def test_smallest_batch_is_read_from_the_pipeline_without_reading_it():
    for name, make in KNOWN.items():
        dataset = make()
        smallest = min(len(b) for b in dataset.take(20))  # reference: the batches themselves
        assert keras_compat.smallest_batch(dataset) == smallest, name
    for name, make in UNKNOWN.items():  # steps that may drop or merge batches: it cannot know without reading
        assert keras_compat.smallest_batch(make()) is None, name


def test_a_short_last_batch_is_refused_before_the_first_step():
    model = SimCLR(small_encoder(), projection_dim=8, hidden_dim=16, seed=0)  # needs 2 images a batch
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"last batch has 1 image\(s\).*drop_remainder=True") as info:
        model.fit(nine().batch(4), epochs=1, verbose=0)
    assert "\n" not in str(info.value)
    assert int(model.step) == 0 and int(model.optimizer.iterations) == 0  # no step ran
    # Barlow Twins needs 4: 10 images leave 2; 12 leave none, and pass unchanged
    barlow = BarlowTwins(small_encoder(), projection_dim=8)
    ten = tf.data.Dataset.from_tensor_slices(random_images(10))
    with pytest.raises(ValueError, match=r"has 2 image\(s\), fewer than the 4 .*drop_remainder=True"):
        barlow.check_fit_data(ten.batch(4), None, None)
    twelve = ten.concatenate(ten.take(2)).batch(4)
    assert barlow.check_fit_data(twelve, None, None)[0].cardinality() == 3


def test_a_short_batch_of_unknown_position_is_skipped_with_a_count_and_the_epoch_completes():
    model = SimCLR(small_encoder(), projection_dim=8, hidden_dim=16, seed=0)
    model.compile(optimizer="adam")
    # Counted by a callback: Keras's TensorFlow loop over data of unknown length adds one to the
    # model's step counter after the last batch (measured with 16 images and no filter of ours too).
    steps = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: setattr(steps, "count", batch + 1))
    images = tf.data.Dataset.from_tensor_slices(random_images(17))
    filtered = images.filter(lambda x: True).batch(8)  # a user's filter: the length is unknown
    assert filtered.cardinality() == tf.data.UNKNOWN_CARDINALITY
    with pytest.warns(UserWarning, match=r"skipped a batch of 1 image\(s\).*\(1 image\(s\) skipped in all\)"):
        history = model.fit(filtered, epochs=1, verbose=0, callbacks=[steps])
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
    assert steps.count == 2  # 17 images: two batches of 8 trained, the batch of 1 skipped


def test_a_known_length_with_an_unknown_last_batch_keeps_its_full_batches():
    model = SimCLR(small_encoder(), projection_dim=8, hidden_dim=16)
    taken = nine().batch(4).take(3)  # length known, smallest batch not: `take` could have cut it
    kept, _, _ = model.check_fit_data(taken, None, None)
    with pytest.warns(UserWarning, match=r"\(1 image\(s\) skipped in all\)"):
        sizes = [len(keras.tree.flatten(batch)[0]) for batch in kept]
    assert sizes == [4, 4]
