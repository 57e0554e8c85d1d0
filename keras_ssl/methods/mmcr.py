"""MMCR (Yerxa et al. 2023, "Learning Efficient Coding of Natural Images with Maximum Manifold
Capacity Representations")."""

import keras
from keras import ops

from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import ProjectionHead
from keras_ssl.losses.manifold import mmcr
from keras_ssl.views.recipes import mmcr_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class MMCR(SSLModel):
    """MMCR: maximise the nuclear norm of the images' view centroids.

    Each image gives `num_views` views; their projections are L2-normalised
    and averaged into the image's centroid, and the loss is minus the
    nuclear norm (sum of singular values) of the `(B, D)` matrix of
    centroids, plus `lmbda` times the mean nuclear norm of each image's
    `(K, D)` views (`lmbda = 0` in the paper). No momentum encoder: the
    paper's CIFAR/STL runs use none (its ImageNet runs add one).

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        num_views: views per image (official default 40 on CIFAR with
            batch 32, 8 on ImageNet; 8 here, as each view costs a forward).
        projection_dim: projector output width (paper: 128).
        hidden_dim: projector hidden width (paper: 512).
        lmbda: weight of the per-image nuclear norm (paper: 0).
        views: a `ManyViews` of `num_views` views; defaults to `mmcr_views`.
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, ...).

    Example:
        >>> from keras_ssl.methods.mmcr import MMCR
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = MMCR(encoder, num_views=4, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history), model.views.num_views, MMCR.default_views(16).num_views
        (['loss', 'z_std'], 4, 8)
    """

    global_views = 8
    view_recipe = staticmethod(mmcr_views)
    gathered_outputs = ("z", "z1")
    monitored_output = "z1"

    def __init__(self, encoder, *, num_views=8, projection_dim=128, hidden_dim=512, lmbda=0.0, **kwargs):
        if int(num_views) < 2:
            raise ValueError(f"`num_views` must be >= 2, got {num_views}.")
        if not lmbda >= 0:
            raise ValueError(f"`lmbda` must be >= 0, got {lmbda}.")
        self.global_views = self.num_views = int(num_views)
        super().__init__(encoder, **kwargs)
        self.projection_dim, self.hidden_dim, self.lmbda = int(projection_dim), int(hidden_dim), float(lmbda)
        # The official CIFAR projector: Linear-BN-ReLU-Linear, both bias-free.
        self.projector = ProjectionHead(self.hidden_dim, self.projection_dim, output_bias=False)
        self.projector.build((None, self.feature_dim))

    def ssl_forward(self, views, training):
        z = self.embed(views, self.projector, training)
        return {"z": ops.stack(z, axis=1), "z1": z[0]}

    def compute_ssl_loss(self, outputs):
        return mmcr(outputs["z"], self.lmbda), {}
