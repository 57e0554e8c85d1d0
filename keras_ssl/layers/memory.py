"""MemoryBank: a FIFO queue of embeddings held in model variables (MoCo, NNCLR, NNBYOL, NNSiam)."""

import keras
from keras import ops

from keras_ssl import backend
from keras_ssl.losses import l2_normalize


def nearest_neighbour(z, support):
    """The row of `support` most cosine-similar to each row of `z`, without gradient.

    Args:
        z: `(B, D)` queries (any norm).
        support: `(K, D)` candidates with unit rows (a `MemoryBank.read()`).

    Returns:
        `(B, D)` rows of `support`, one per query.

    Example:
        >>> from keras_ssl.layers.memory import nearest_neighbour
        >>> support = np.eye(3, dtype="float32")
        >>> z = np.array([[0.1, 5.0, 0.0], [-1.0, 0.0, 0.2]], "float32")
        >>> np.asarray(nearest_neighbour(z, support)).tolist()
        [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    index = ops.argmax(ops.matmul(l2_normalize(z), ops.transpose(support)), axis=1)
    return ops.stop_gradient(ops.take(support, index, axis=0))


@keras.saving.register_keras_serializable(package="keras_ssl")
class MemoryBank(keras.layers.Layer):
    """A FIFO queue of L2-normalised keys in non-trainable variables.

    The queue starts as random unit vectors. `enqueue(keys)` overwrites the
    oldest rows, wrapping around the end without dropping any row. The
    queue, its write pointer and its fill count are variables: they are
    updated inside the compiled step and saved with the model (and in
    `BackupAndRestore` checkpoints), so a resumed run keeps its negatives.

    Args:
        size: number of rows `K` (must be at least the batch size).
        dim: width of each key.
        seed: seed of the random initial keys.

    Example:
        >>> bank = keras_ssl.layers.MemoryBank(64, 8, seed=0)
        >>> negatives = bank.read()        # (64, 8), a copy
        >>> keys = keras.random.normal((16, 8), seed=1)
        >>> bank.enqueue(keys)             # keys: (B, 8)
        >>> int(bank.pointer.numpy()), int(bank.filled.numpy()), bool(bank.is_full())
        (16, 16, False)
        >>> bool(np.allclose(bank.read()[:16], keras_ssl.losses.l2_normalize(keys), atol=1e-6))
        True
        >>> bool(np.array_equal(bank.read()[16:], negatives[16:]))   # the older rows are kept
        True
    """

    def __init__(self, size, dim, seed=None, **kwargs):
        super().__init__(**kwargs)
        if int(size) < 1 or int(dim) < 1:
            raise ValueError(f"MemoryBank `size` and `dim` must be >= 1, got size={size}, dim={dim}.")
        self.size, self.dim, self.seed = int(size), int(dim), seed

        def unit_rows(shape, dtype=None):
            return l2_normalize(keras.random.normal(shape, seed=seed))

        self.queue = self.add_weight(
            name="queue",
            shape=(self.size, self.dim),
            dtype="float32",
            initializer=unit_rows,
            trainable=False,
        )
        self.pointer = self.add_weight(name="pointer", shape=(), dtype="int32", initializer="zeros", trainable=False)
        self.filled = self.add_weight(name="filled", shape=(), dtype="int32", initializer="zeros", trainable=False)
        self.built = True

    def check_batch_size(self, batch_size):
        """Raises ValueError when a batch of `batch_size` keys exceeds the queue."""
        if batch_size is not None and int(batch_size) > self.size:
            raise ValueError(
                f"the batch ({int(batch_size)} keys) is larger than the memory bank "
                f"({self.size} rows): use a queue of at least the batch size."
            )

    def read(self):
        """The queue's current rows, `(size, dim)`: a copy, safe across `enqueue`."""
        # On TF and torch a variable's value aliases its later assignments.
        return ops.copy(ops.convert_to_tensor(self.queue))

    def nearest(self, z):
        """The queue's row nearest (cosine) to each row of `z` `(B, dim)`, read before any `enqueue`.

        The support-set lookup of NNCLR, NNBYOL and NNSiam (`nearest_neighbour`).
        """
        return nearest_neighbour(z, self.read())

    def is_full(self):
        """Boolean scalar tensor: every row has been written at least once."""
        return ops.convert_to_tensor(self.filled) >= self.size

    def enqueue(self, keys):
        """Writes `keys` `(B, dim)` (normalised, no gradient) after the newest rows.

        Under a multi-replica step the keys of all replicas are enqueued, in
        replica order, so every replica keeps the same queue.
        """
        keys = backend.gather(ops.stop_gradient(ops.convert_to_tensor(keys)))
        self.check_batch_size(keys.shape[0])
        keys = l2_normalize(keys)
        batch = ops.shape(keys)[0]
        pointer = ops.copy(ops.convert_to_tensor(self.pointer))
        rows = (pointer + ops.arange(batch, dtype="int32")) % self.size
        self.queue.assign(ops.scatter_update(self.read(), ops.expand_dims(rows, 1), keys))
        self.pointer.assign((pointer + batch) % self.size)
        filled = ops.copy(ops.convert_to_tensor(self.filled))
        self.filled.assign(ops.minimum(filled + batch, self.size))

    def call(self, inputs=None):
        return self.read()

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, dim=self.dim, seed=self.seed)
        return config
