"""DeepCluster-v2 (Caron et al. 2020, in "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments")."""

import keras
from keras import ops

from keras_ssl.engine import SSLModel
from keras_ssl.engine import fit as fit_policy
from keras_ssl.layers.cluster_memory import ClusterMemory
from keras_ssl.layers.heads import ProjectionHead
from keras_ssl.losses import l2_normalize
from keras_ssl.losses.deepcluster import deepcluster_v2
from keras_ssl.views.multi_crop import multi_crop_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class DeepClusterV2(SSLModel):
    """DeepCluster-v2: classify every crop into its sample's k-means cluster of the last epoch.

    A memory (`model.memory`, a `layers.ClusterMemory`) holds, for each
    training sample (by its index in the dataset) and each of the two global
    crops, its last L2-normalised projection. At each epoch start, spherical
    k-means (`kmeans_iterations` rounds from random bank rows) clusters it
    once per head, head `h` on global crop `h % 2`'s bank; the centroids
    become frozen prototypes and each sample keeps its cluster. The loss is
    the cross-entropy between every crop's cosine scores to a head's
    prototypes over `temperature` and the sample's cluster, averaged over
    crops and heads. Before the first epoch, `fit` fills the bank with a
    pass over the data (`fill_memory`, through the engine's
    `before_training` hook), as the official code's `init_memory`, so the
    first epoch already trains; with `memory_pass=False` the first epoch
    fills it instead (loss 0, no learning; solo-learn's choice, which saves
    the pass).

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
        >>> tuple(model.memory.assignments.shape)   # each sample's cluster, per head
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
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        super().__init__(encoder, **kwargs)
        self.projection_dim = int(projection_dim)
        self.hidden_dim = int(hidden_dim or min(2048, 4 * self.feature_dim))
        self.temperature, self.memory_pass = float(temperature), bool(memory_pass)
        self.projector = ProjectionHead(self.hidden_dim, self.projection_dim, initializer=self.head_initializer)
        self.projector.build((None, self.feature_dim))
        self.memory = ClusterMemory(
            num_samples, self.projection_dim, num_prototypes, iterations=kmeans_iterations, seed=self.next_seed()
        )
        self.num_samples, self.num_prototypes = self.memory.num_samples, self.memory.num_clusters
        self.kmeans_iterations = self.memory.iterations

    def ssl_forward(self, views, indices, training):
        # One projector call over all crops, so BatchNorm sees every crop.
        z = [l2_normalize(zv) for zv in self.embed(views, self.projector, training, together=True)]
        scores = [[ops.matmul(zv, ops.transpose(centroids)) for zv in z] for centroids in self.memory.centroids]
        return {"z1": z[0], "z2": z[1], "scores": scores, "indices": ops.cast(indices, "int32")}

    def compute_ssl_loss(self, outputs):
        return deepcluster_v2(outputs["scores"], self.memory.clusters(outputs["indices"]), self.temperature), {}

    def update_state(self, outputs):
        self.memory.write([outputs["z1"], outputs["z2"]], outputs["indices"])

    def begin_epoch(self, epoch):
        """Clusters the memory when a complete pass has filled it since the last clustering (`fit` calls it)."""
        self.memory.recluster_if_filled()

    def end_epoch(self, epoch):
        """Marks the memory complete: the next epoch starts with k-means (`fit` calls it)."""
        self.memory.filled.assign(1)

    # ------------------------------------------------- the memory pass
    def before_training(self, x, y, batch_size, steps):
        """`fill_memory` when `memory_pass` is on (`fit` calls it when it starts an untrained model)."""
        if self.memory_pass and not int(ops.convert_to_numpy(self.memory.filled)):
            self.fill_memory(x, y, batch_size, steps)

    def fill_memory(self, x, y=None, batch_size=None, steps=None):
        """The official `init_memory`: one pass over `x` fills the memory; the next epoch starts with k-means.

        Each sample's two global crops (drawn as in training, in the first
        epoch's batch order) go through the network one crop at a time in
        training mode, without gradient or optimizer step
        (`engine.fit.data_pass`), and their unit projections take the
        sample's rows. `fit` calls it; call it yourself to fill the memory
        from other data.

        Args:
            x, y, batch_size: as `fit`'s (images with their indices, see above).
            steps: batches to read; defaults to the whole source.

        Example:
            >>> from keras_ssl.methods.deepcluster import DeepClusterV2
            >>> encoder = keras_ssl.backbones.tiny_encoder((None, None, 3), width=8)
            >>> model = DeepClusterV2(encoder, input_shape=(16, 16, 3), num_samples=64, num_prototypes=(4,))
            >>> model.fill_memory(x_train, batch_size=16)
            >>> int(model.memory.filled)   # the first epoch clusters the memory
            1
        """
        alternative = "or build the model with memory_pass=False (the first epoch fills the bank)"
        fit_policy.data_pass(self, self._memory_step, x, y, batch_size, steps, alternative=alternative)
        self.memory.filled.assign(1)

    def _memory_step(self, inputs):
        images, indices = inputs
        views = self.views(self.preprocess(images), training=True)
        # Each assignment crop alone through the network in training mode (batch statistics), as init_memory.
        z = [l2_normalize(self.embed([v], self.projector, training=True)[0]) for v in views[:2]]
        self.memory.write(z, indices)
        return z[0][:, :1]
