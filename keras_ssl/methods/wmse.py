"""W-MSE (Ermolov et al. 2021, "Whitening for Self-Supervised Representation Learning")."""

import keras
import numpy as np
from keras import ops

from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import ProjectionHead
from keras_ssl.losses.whitening import wmse
from keras_ssl.views.recipes import wmse_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class WMSE(SSLModel):
    """W-MSE: the MSE of L2-normalised views after whitening each sub-batch.

    The projections of every view are cut into sub-batches of `w_size`
    rows, each whitened with the inverse Cholesky factor of its covariance,
    so the embeddings cannot collapse; the loss is `2 - 2 cos` between the
    whitened views of each image, averaged over the pairs of views. The
    rows are shuffled into sub-batches `w_iter` times per step (a
    `keras.random.SeedGenerator`, saved with the model). As the official
    code, the encoder runs on each view alone and the projector on all views
    together (BatchNorm statistics per view, then across views). The official
    `Whitening2d` can keep running statistics, but W-MSE builds it with
    `track_running_stats=False` and never whitens at evaluation: none here.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        num_views: views per image (paper: 2, "W-MSE 2", or 4, "W-MSE 4").
        projection_dim: projector output width, the whitened dimension
            (paper: 64 on CIFAR, 128 on STL-10 and Tiny ImageNet).
        hidden_dim: projector hidden width (paper: 1024).
        w_size: rows per whitened sub-batch; divides the batch size, and
            exceeds `projection_dim` when `eps = 0` (paper: 128 on CIFAR).
        w_iter: random sub-batch draws per step (paper: 1; 4 for W-MSE 2 on STL-10).
        eps: covariance shrinkage toward the identity (paper: 0).
        views: a `ManyViews` of `num_views` views; defaults to `wmse_views`
            (the official augmentations).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> from keras_ssl.methods.wmse import WMSE
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = WMSE(encoder, projection_dim=4, hidden_dim=16, w_size=8)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['loss', 'z_std']
    """

    default_head_initializer = "torch"  # PyTorch's `nn.Linear` default, the official code's
    global_views = 2
    view_recipe = staticmethod(wmse_views)
    encoder_batches = "view"  # the official WMSE.forward: the encoder on each view alone
    gathered_outputs = ("z", "z1")
    monitored_output = "z1"

    def __init__(
        self,
        encoder,
        *,
        num_views=2,
        projection_dim=64,
        hidden_dim=1024,
        w_size=128,
        w_iter=1,
        eps=0.0,
        **kwargs,
    ):
        if int(num_views) < 2:
            raise ValueError(f"`num_views` must be >= 2, got {num_views}.")
        if int(w_size) < 2 or int(w_iter) < 1:
            raise ValueError(f"`w_size` must be >= 2 and `w_iter` >= 1, got {w_size} and {w_iter}.")
        if not 0 <= eps <= 1:
            raise ValueError(f"`eps` must be in [0, 1], got {eps}.")
        if eps == 0 and int(w_size) <= int(projection_dim):
            raise ValueError(
                f"`w_size` ({w_size}) must exceed `projection_dim` ({projection_dim}) when `eps` = 0: "
                "the covariance of fewer rows than dimensions is singular and has no Cholesky factor."
            )
        self.global_views = self.num_views = int(num_views)
        super().__init__(encoder, **kwargs)
        self.projection_dim, self.hidden_dim = int(projection_dim), int(hidden_dim)
        self.w_size, self.w_iter, self.eps = int(w_size), int(w_iter), float(eps)
        self.projector = ProjectionHead(self.hidden_dim, self.projection_dim, initializer=self.head_initializer)
        self.projector.build((None, self.feature_dim))
        self.shuffle_seed = keras.random.SeedGenerator(self.next_seed())

    def check_batch_size(self, batch_size):
        super().check_batch_size(batch_size)
        if batch_size % self.w_size:
            raise ValueError(
                f"WMSE whitens sub-batches of w_size={self.w_size} rows: the batch size must be a multiple "
                f"of it, got batch_size={batch_size}."
            )

    def build_inputs(self):
        # Distinct images: a constant batch has a zero covariance, whose Cholesky factor fails.
        shape = (self.w_size,) + self.image_shape
        return ops.convert_to_tensor(np.random.default_rng(0).uniform(size=shape).astype("float32"))

    def ssl_forward(self, views, training):
        # As the official `WMSE.forward`: the encoder sees each view on its own (`encoder_batches`),
        # the projector all of them at once, so its BatchNorm statistics span the views.
        z = self.embed(views, self.projector, training, together=True)
        return {"z": z, "z1": z[0]}

    def compute_ssl_loss(self, outputs):
        z = outputs["z"]
        rows = ops.arange(ops.shape(z[0])[0])
        orders = ops.stack([keras.random.shuffle(rows, seed=self.shuffle_seed) for _ in range(self.w_iter)])
        return wmse(z, self.w_size, orders, self.eps), {}
