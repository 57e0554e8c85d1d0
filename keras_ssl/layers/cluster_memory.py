"""ClusterMemory: each training sample's last embeddings, clustered by spherical k-means once per epoch."""

import keras
from keras import ops

from keras_ssl import backend
from keras_ssl.losses import l2_normalize
from keras_ssl.losses.deepcluster import spherical_kmeans


@keras.saving.register_keras_serializable(package="keras_ssl")
class ClusterMemory(keras.layers.Layer):
    """A per-sample memory of unit embeddings and its k-means clusters, in non-trainable variables.

    `bank[j, i]` holds sample `i`'s last embedding of view `j` (written by
    `write`, by the sample's index in the dataset). `recluster()` runs
    spherical k-means (`iterations` rounds from distinct random rows) once
    per head, head `h` on view `h % num_views`'s bank, as DeepCluster-v2's
    official code takes the assignment crops in turn; the centroids become
    the head's prototypes and `assignments[h, i]` sample `i`'s cluster (-1
    before the first clustering). `filled` is 1 from a complete pass over the
    data (an epoch's end, or a memory pass) to the next clustering, so a run
    resumed in the middle of an epoch keeps its clusters. Everything,
    the random generator included, is saved with the model.

    Args:
        num_samples: rows per view (the training set's size).
        dim: width of each embedding.
        num_clusters: clusters of each head, a tuple (at most `num_samples` each).
        num_views: views stored per sample (DeepCluster-v2: its 2 global crops).
        iterations: k-means rounds per clustering, >= 1.
        seed: seed of the random initial rows and of k-means' starting rows.

    Example:
        >>> memory = keras_ssl.layers.ClusterMemory(num_samples=6, dim=3, num_clusters=(2,), seed=0)
        >>> z = np.array([[1, 0, 0], [0.9, 0.1, 0], [1, 0, 0.1], [0, 1, 0], [0, 0.9, 0.1], [0.1, 1, 0]], "float32")
        >>> memory.write([z, z], np.arange(6))
        >>> memory.recluster()
        >>> a = np.asarray(memory.assignments)[0]
        >>> bool(a[0] == a[1] == a[2] != a[3] == a[4] == a[5])
        True
        >>> np.asarray(memory.clusters(np.array([4, 0]))).tolist() == [[a[4], a[0]]]
        True
    """

    def __init__(self, num_samples, dim, num_clusters, num_views=2, iterations=10, seed=None, **kwargs):
        super().__init__(**kwargs)
        num_clusters = (num_clusters,) if isinstance(num_clusters, int) else tuple(num_clusters)
        if not num_clusters or any(int(k) != k or not 1 <= k <= num_samples for k in num_clusters):
            raise ValueError(
                "`num_clusters` (DeepClusterV2's `num_prototypes`) must be integers in "
                f"[1, num_samples={num_samples}], got {num_clusters}."
            )
        if int(iterations) != iterations or iterations < 1:
            raise ValueError(
                f"`iterations` (DeepClusterV2's `kmeans_iterations`) must be an integer >= 1, got {iterations}."
            )
        self.num_samples, self.dim, self.num_views = int(num_samples), int(dim), int(num_views)
        self.num_clusters, self.iterations, self.seed = tuple(int(k) for k in num_clusters), int(iterations), seed
        # One generator for the random starting rows and k-means' draws: a resumed run draws as the uninterrupted one.
        self.generator = keras.random.SeedGenerator(seed)

        def unit_rows(shape, dtype=None):  # random until the first pass has written every sample
            return l2_normalize(keras.random.normal(shape, seed=self.generator))

        state = dict(trainable=False, initializer=unit_rows)
        self.bank = self.add_weight(name="bank", shape=(self.num_views, self.num_samples, self.dim), **state)
        self.centroids = [
            self.add_weight(name=f"centroids_{h}", shape=(k, self.dim), **state)
            for h, k in enumerate(self.num_clusters)
        ]
        self.assignments = self.add_weight(
            name="assignments",
            shape=(len(self.num_clusters), self.num_samples),
            dtype="int32",
            initializer=keras.initializers.Constant(-1),
            trainable=False,
        )
        self.filled = self.add_weight(name="filled", shape=(), dtype="int32", initializer="zeros", trainable=False)
        self.built = True

    def write(self, embeddings, indices):
        """Stores `embeddings` (one `(B, dim)` unit array per view, no gradient) as samples `indices`' rows.

        Under a multi-replica step every replica writes the global batch (replica
        order), so the memories stay equal.
        """
        indices = backend.gather(ops.cast(indices, "int32"))
        z = [backend.gather(ops.stop_gradient(ops.convert_to_tensor(zv))) for zv in embeddings]
        rows = ops.concatenate([ops.stack([ops.full_like(indices, j), indices], axis=1) for j in range(len(z))], axis=0)
        self.bank.assign(ops.scatter_update(self.bank, rows, ops.concatenate(z, axis=0)))

    def clusters(self, indices):
        """`(heads, B)`: each head's cluster of samples `indices` (-1 before the first clustering)."""
        return ops.take(self.assignments, ops.cast(indices, "int32"), axis=1)

    def recluster(self):
        """Spherical k-means of the bank, once per head: new centroids and each sample's clusters."""
        clusters = []
        for h, (k, centroids) in enumerate(zip(self.num_clusters, self.centroids)):
            bank = self.bank[h % self.num_views]
            new, assigned = spherical_kmeans(bank, ops.take(bank, self.init_rows(k), axis=0), self.iterations)
            centroids.assign(new)
            clusters.append(assigned)
        self.assignments.assign(ops.stack(clusters))

    def recluster_if_filled(self):
        """`recluster()` when a complete pass has written the bank since the last clustering."""
        if int(ops.convert_to_numpy(self.filled)):
            self.recluster()
            self.filled.assign(0)

    def init_rows(self, k):
        """`k` distinct random bank rows: k-means' starting centroids."""
        return ops.argsort(keras.random.uniform((self.num_samples,), seed=self.generator))[:k]

    def call(self, inputs=None):
        return self.assignments

    def get_config(self):
        config = super().get_config()
        config.update(
            num_samples=self.num_samples,
            dim=self.dim,
            num_clusters=self.num_clusters,
            num_views=self.num_views,
            iterations=self.iterations,
            seed=self.seed,
        )
        return config
