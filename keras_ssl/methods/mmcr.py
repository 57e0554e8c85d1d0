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
    `(K, D)` views (`lmbda = 0` in the paper). The projector runs once over
    all views, so its BatchNorm sees every view (the official `(B N)` batch).

    By default no momentum encoder, as the paper's CIFAR/STL runs. With
    `momentum` (its ImageNet runs, official `MMCR_Momentum_Loss`), an EMA
    copy of the encoder and projector embeds the same views, and each
    centroid is the mean of the online and momentum centroids
    (`keras_ssl.losses.mmcr(z, lmbda, z_momentum)`); the momentum is constant
    unless `momentum_end` is given (the official `tau = 0.99`).

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        num_views: views per image (official default 40 on CIFAR with
            batch 32; `pretrain_imagenet.py` defaults to 2, its README
            runs 4 and 8; 8 here, as each view costs a forward).
        projection_dim: projector output width (paper: 128).
        hidden_dim: projector hidden width (paper: 512).
        lmbda: weight of the per-image nuclear norm (paper: 0).
        momentum: None (no momentum encoder), or its EMA momentum in [0, 1]
            (official ImageNet: 0.99).
        momentum_end: momentum at the last step (cosine); defaults to `momentum`.
        views: a `ManyViews` of `num_views` views; defaults to `mmcr_views`.
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> from keras_ssl.methods.mmcr import MMCR
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = MMCR(encoder, num_views=4, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history), model.views.num_views, MMCR.default_views(16).num_views
        (['loss', 'z_std'], 4, 8)
        >>> MMCR(encoder, num_views=2, projection_dim=8, hidden_dim=16, momentum=0.99).momentum_pairs
        (('encoder', 'momentum_encoder'), ('projector', 'momentum_projector'))
    """

    default_head_initializer = "torch"  # PyTorch's `nn.Linear` default, the official code's
    global_views = 8
    view_recipe = staticmethod(mmcr_views)
    gathered_outputs = ("z", "z1")
    monitored_output = "z1"

    def __init__(
        self,
        encoder,
        *,
        num_views=8,
        projection_dim=128,
        hidden_dim=512,
        lmbda=0.0,
        momentum=None,
        momentum_end=None,
        **kwargs,
    ):
        if int(num_views) < 2:
            raise ValueError(f"`num_views` must be >= 2, got {num_views}.")
        if not lmbda >= 0:
            raise ValueError(f"`lmbda` must be >= 0, got {lmbda}.")
        self.global_views = self.num_views = int(num_views)
        if momentum is not None:
            # Declared before the engine's constructor, which makes the targets from them.
            self.momentum_pairs = (("encoder", "momentum_encoder"), ("projector", "momentum_projector"))
            self.gathered_outputs = (*MMCR.gathered_outputs, "z_momentum")
        super().__init__(encoder, momentum=momentum, momentum_end=momentum_end, **kwargs)
        self.projection_dim, self.hidden_dim, self.lmbda = int(projection_dim), int(hidden_dim), float(lmbda)
        # The official CIFAR projector: Linear-BN-ReLU-Linear, both bias-free.
        self.projector = ProjectionHead(
            self.hidden_dim, self.projection_dim, output_bias=False, initializer=self.head_initializer
        )
        self.projector.build((None, self.feature_dim))

    def _project(self, views, encoder, projector, training):
        return self.embed(views, projector, training, encoder=encoder, together=True)

    def ssl_forward(self, views, training):
        z = self._project(views, self.encoder, self.projector, training)
        outputs = {"z": ops.stack(z, axis=1), "z1": z[0]}
        if self.momentum_pairs:
            z_m = self._project(views, self.momentum_encoder, self.momentum_projector, training)
            outputs["z_momentum"] = ops.stop_gradient(ops.stack(z_m, axis=1))
        return outputs

    def compute_ssl_loss(self, outputs):
        return mmcr(outputs["z"], self.lmbda, outputs.get("z_momentum")), {}
