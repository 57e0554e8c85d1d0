"""`tf.data` pipelines on every backend: short batches dropped (their smallest size: `keras_compat.smallest_batch`).

TensorFlow is imported where it is used: these run only on a `tf.data` source, which needs it.
"""


def drop_short_batches(dataset, min_batch, skipped):
    """`dataset` without its batches of fewer than `min_batch` images; `skipped(count)` runs for each, in Python.

    The size is a TensorFlow op in the pipeline, on every backend (a `tf.data` source means TensorFlow is
    installed). Only short batches call Python.

    Example:
        >>> import tensorflow as tf
        >>> from keras_ssl.backend.tf_data import drop_short_batches
        >>> nine = tf.data.Dataset.from_tensor_slices(x_small[:9]).batch(4)
        >>> [len(batch) for batch in drop_short_batches(nine, 2, lambda count: print("skipped", count))]
        skipped 1
        [4, 4]
    """
    import tensorflow as tf

    def keep(*element):
        count = tf.shape(tf.nest.flatten(element)[0])[0]
        skip = lambda: tf.reshape(tf.py_function(lambda n: skipped(int(n)) or False, [count], tf.bool), [])
        return tf.cond(count < min_batch, skip, lambda: tf.constant(True))

    return dataset.filter(keep)
