"""DeepCluster-v2 (Caron et al. 2020, in "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments")."""

import keras
from keras import ops

from keras_ssl import backend
from keras_ssl.engine import SSLModel
from keras_ssl.engine import fit as fit_policy
from keras_ssl.layers.heads import ProjectionHead
from keras_ssl.losses import l2_normalize
from keras_ssl.losses.deepcluster import deepcluster_v2, spherical_kmeans
from keras_ssl.views.multi_crop import multi_crop_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class DeepClusterV2(SSLModel):
    """DeepCluster-v2: classify every crop into its sample's k-means cluster of the last epoch.

    A memory bank holds, for each training sample (by its index in the
    dataset) and each of the two global crops, its last L2-normalised
    projection. At each epoch start, spherical k-means (`kmeans_iterations`
    rounds from random bank rows) clusters the bank once per head, head `h`
    on global crop `h % 2`'s bank; the centroids become frozen prototypes and
    each sample keeps its cluster. The loss is the cross-entropy between
    every crop's cosine scores to a head's prototypes over `temperature` and
    the sample's cluster, averaged over crops and heads. Before the first
    epoch, `fit` fills the bank with a pass over the data (`fill_memory`),
    as the official code's `init_memory`, so the first epoch already trains;
    with `memory_pass=False` the first epoch fills it instead (loss 0, no
    learning; solo-learn's choice, which saves the pass).

    Training needs each image's index: `fit` gives NumPy images their row;
    any other source yields `(images, indices)` batches
    (`ImageFiles(..., with_indices=True)` gives each file's position), checked
    by the engine (`data.per_sample`). The bank, centroids and clusters are
    saved with the model, so a killed run resumes exactly.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)`; it must
            accept both crop sizes (input `(None, None, C)`, then `input_shape=`).
        num_samples: size of the training set (rows of the memory bank).
        num_prototypes: clusters of each head; defaults to the paper's 3 heads
            of 3000 (at most `num_samples` each).
        projection_dim: projector output width (paper: 128).
        hidden_dim: projector hidden width; defaults to `min(2048, 4 * D)`.
        temperature: softmax temperature, > 0 (paper: 0.1).
        kmeans_iterations: k-means rounds per epoch, >= 1 (paper: 10).
        memory_pass: fill the bank with a pass over the data when `fit`
            starts an untrained model (the official code's); False leaves it
            to the first epoch.
        views: a `MultiCrop` (2 global crops first); defaults to
            `multi_crop_views` (paper: 2 x 224 + 6 x 96 px).
        **kwargs: `SSLModel` options (`input_shape`, `seed`, `head_initializer`, ...).

    Example:
        >>> from keras_ssl.methods.deepcluster import DeepClusterV2
        >>> encoder = keras_ssl.backbones.tiny_encoder((None, None, 3), width=8)
        >>> model = DeepClusterV2(
        ...     encoder, input_shape=(16, 16, 3), num_samples=64, num_prototypes=(4, 4), projection_dim=8, hidden_dim=16
        ... )
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, epochs=2, batch_size=16, verbose=0)
        >>> bool(history.history["loss"][0] > 0)   # the memory pass before epoch 1 gave it clusters
        True
        >>> tuple(model.assignments.shape)   # each sample's cluster, per head
        (2, 64)
    """

    default_head_initializer = "torch"  # PyTorch's `nn.Linear` default, the official code's
    needs_indices = True
    local_views = True
    view_recipe = staticmethod(multi_crop_views)
    local_outputs = ("z1", "z2", "scores", "indices")
    monitored_output = "z1"

    def __init__(
        self,
        encoder,
        *,
        num_samples,
        num_prototypes=None,
        projection_dim=128,
        hidden_dim=None,
        temperature=0.1,
        kmeans_iterations=10,
        memory_pass=True,
        **kwargs,
    ):
        if num_prototypes is None:  # the paper's three heads of 3000, no more clusters than images
            num_prototypes = (min(3000, int(num_samples)),) * 3
        num_prototypes = (num_prototypes,) if isinstance(num_prototypes, int) else tuple(num_prototypes)
        if not num_prototypes or any(int(k) != k or not 1 <= k <= num_samples for k in num_prototypes):
            raise ValueError(f"`num_prototypes` must be integers in [1, num_samples], got {num_prototypes}.")
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        if int(kmeans_iterations) != kmeans_iterations or kmeans_iterations < 1:
            raise ValueError(f"`kmeans_iterations` must be an integer >= 1, got {kmeans_iterations}.")
        super().__init__(encoder, **kwargs)
        self.num_samples, self.num_prototypes = int(num_samples), tuple(int(k) for k in num_prototypes)
        self.projection_dim = int(projection_dim)
        self.hidden_dim = int(hidden_dim or min(2048, 4 * self.feature_dim))
        self.temperature, self.kmeans_iterations = float(temperature), int(kmeans_iterations)
        self.memory_pass, self._filling = bool(memory_pass), False
        self.projector = ProjectionHead(self.hidden_dim, self.projection_dim, initializer=self.head_initializer)
        self.projector.build((None, self.feature_dim))
        state = dict(trainable=False, initializer=keras.initializers.RandomNormal(seed=self.next_seed()))
        # Random unit rows until the first epoch has written every sample's projections.
        self.bank = self.add_weight(name="bank", shape=(2, self.num_samples, self.projection_dim), **state)
        self.bank.assign(l2_normalize(self.bank))
        self.centroids = [
            self.add_weight(name=f"centroids_{h}", shape=(k, self.projection_dim), **state)
            for h, k in enumerate(self.num_prototypes)
        ]
        for centroids in self.centroids:
            centroids.assign(l2_normalize(centroids))
        self.assignments = self.add_weight(
            name="assignments",
            shape=(len(self.num_prototypes), self.num_samples),
            dtype="int32",
            initializer=keras.initializers.Constant(-1),
            trainable=False,
        )
        # 1 from an epoch's end to the next epoch's k-means; a run resumed mid-epoch finds 0 and keeps its clusters.
        self.kmeans_pending = self.add_weight(
            name="kmeans_pending", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self.kmeans_seed = keras.random.SeedGenerator(self.next_seed())

    def ssl_forward(self, views, indices, training):
        # One projector call over all crops, so BatchNorm sees every crop.
        z = [l2_normalize(zv) for zv in self.embed(views, self.projector, training, together=True)]
        scores = [[ops.matmul(zv, ops.transpose(centroids)) for zv in z] for centroids in self.centroids]
        return {"z1": z[0], "z2": z[1], "scores": scores, "indices": ops.cast(indices, "int32")}

    def compute_ssl_loss(self, outputs):
        clusters = ops.take(self.assignments, outputs["indices"], axis=1)
        return deepcluster_v2(outputs["scores"], clusters, self.temperature), {}

    def update_state(self, outputs):
        # Every replica stores the global batch (replica order), so the banks stay equal.
        indices = backend.gather(outputs["indices"])
        z = [backend.gather(ops.stop_gradient(outputs[key])) for key in ("z1", "z2")]
        rows = ops.concatenate([ops.stack([ops.full_like(indices, j), indices], axis=1) for j in (0, 1)], axis=0)
        self.bank.assign(ops.scatter_update(self.bank, rows, ops.concatenate(z, axis=0)))

    # ------------------------------------------------- the memory pass
    def fit(self, x=None, y=None, batch_size=None, **kwargs):
        """`SSLModel.fit`, after `fill_memory` when `memory_pass` is on and the model has not trained yet."""
        fresh = not kwargs.get("initial_epoch") and int(ops.convert_to_numpy(self.step)) == 0
        if self.memory_pass and fresh and not int(ops.convert_to_numpy(self.kmeans_pending)):
            self.fill_memory(x, y, batch_size, steps=kwargs.get("steps_per_epoch"))
        return super().fit(x, y, batch_size, **kwargs)

    def fill_memory(self, x, y=None, batch_size=None, steps=None):
        """The official `init_memory`: one pass over `x` fills the bank; the next epoch starts with k-means.

        Each sample's two global crops (drawn as in training, in the first
        epoch's batch order) go through the network one crop at a time in
        training mode, without gradient or optimizer step, and their unit
        projections take the sample's bank rows. `fit` calls it; call it
        yourself to fill the bank from other data.

        Args:
            x, y, batch_size: as `fit`'s (images with their indices, see above).
            steps: batches to read; defaults to the whole source.

        Example:
            >>> from keras_ssl.methods.deepcluster import DeepClusterV2
            >>> encoder = keras_ssl.backbones.tiny_encoder((None, None, 3), width=8)
            >>> model = DeepClusterV2(encoder, input_shape=(16, 16, 3), num_samples=64, num_prototypes=(4,))
            >>> model.fill_memory(x_train, batch_size=16)
            >>> int(model.kmeans_pending)   # the first epoch clusters the bank
            1
        """
        if hasattr(x, "__next__"):
            raise ValueError(
                "DeepClusterV2's memory pass got a generator or iterator, which is read once: training would "
                "then find it empty. Give a PyDataset, a list of batches, a tf.data.Dataset or a torch "
                "DataLoader, or build the model with memory_pass=False (the first epoch fills the bank)."
            )
        self._ensure_built()
        data, _, batch_size, _, _ = fit_policy.fit_arguments(self, x, y, batch_size, {"epochs": 1})
        # Keras's predict loop: it iterates any source and keeps the bank's updates on every backend.
        self._filling, self.predict_function = True, None
        try:
            self.predict(data, batch_size=batch_size, steps=steps, verbose=0)
        finally:
            self._filling, self.predict_function = False, None
        self.kmeans_pending.assign(1)

    def call(self, inputs, training=False):
        if not self._filling:
            return super().call(inputs, training=training)
        images, indices = inputs
        views = self.views(self.preprocess(images), training=True)
        # Each assignment crop alone through the network in training mode (batch statistics), as init_memory.
        z = [l2_normalize(self.embed([v], self.projector, training=True)[0]) for v in views[:2]]
        self.update_state({"z1": z[0], "z2": z[1], "indices": ops.cast(indices, "int32")})
        return z[0][:, :1]

    # --------------------------------------------------- once per epoch
    def begin_epoch(self, epoch):
        """Clusters the bank when an epoch has ended since the last clustering (`fit` calls it)."""
        if int(ops.convert_to_numpy(self.kmeans_pending)):
            self.recluster()
            self.kmeans_pending.assign(0)

    def end_epoch(self, epoch):
        """Marks the bank complete: the next epoch starts with k-means (`fit` calls it)."""
        self.kmeans_pending.assign(1)

    def recluster(self):
        """Spherical k-means of the bank: new centroids (prototypes) and each sample's clusters."""
        clusters = []
        for h, (k, centroids) in enumerate(zip(self.num_prototypes, self.centroids)):
            bank = self.bank[h % 2]  # the official code's heads take the assignment crops in turn
            start = ops.take(bank, self.kmeans_init_rows(k), axis=0)
            new, assigned = spherical_kmeans(bank, start, self.kmeans_iterations)
            centroids.assign(new)
            clusters.append(assigned)
        self.assignments.assign(ops.stack(clusters))

    def kmeans_init_rows(self, k):
        """`k` distinct random bank rows, k-means' starting centroids."""
        return ops.argsort(keras.random.uniform((self.num_samples,), seed=self.kmeans_seed))[:k]
