"""MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers")."""

import keras

from keras_ssl import losses
from keras_ssl.backbones.vit import ViT
from keras_ssl.layers.heads import PredictionHead, ProjectionHead
from keras_ssl.methods.moco import MoCo
from keras_ssl.views.recipes import byol_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class MoCoV3(MoCo):
    """MoCo v3: symmetric InfoNCE between predicted queries and momentum keys.

    No queue: each view's query (encoder, projector, predictor) is
    contrasted with the other view's key among the batch's keys, and the
    loss is `2 tau (ctr(q1, k2) + ctr(q2, k1))` as in the official code;
    the momentum follows a cosine schedule from 0.99 to 1.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        temperature: InfoNCE temperature (> 0); paper: 1.0 for ResNets (0.2 ViT).
        projection_dim: projector and predictor output width (paper: 256).
        hidden_dim: their hidden width; defaults to `D` (paper: 4096).
        momentum, momentum_end: cosine EMA schedule (paper: 0.99 -> 1).
        projector_layers: defaults to the official code's 3 for a keras_ssl
            ViT, 2 otherwise; bias-free layers, the projector ending in a
            non-affine BatchNorm, the 2-layer predictor too for a ViT only.
        split_batch_norm, num_splits: as `MoCoV2` (off: v3 has no shuffle-BN).
        views: a `TwoViews`; defaults to `byol_views` (as the paper).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = keras_ssl.MoCoV3(encoder, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=keras_ssl.optimizers.LARS(0.3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history), model.momentum, model.momentum_end
        (['loss', 'z_std'], 0.99, 1.0)
    """

    resnet_init = ("torchvision", True)  # main_moco.py: resnet50(zero_init_residual=True)

    version = 3
    view_recipe = staticmethod(byol_views)
    gathered_outputs = ("z1", "q1", "q2", "k1", "k2")

    def __init__(
        self,
        encoder,
        *,
        temperature=1.0,
        projection_dim=256,
        hidden_dim=None,
        momentum=0.99,
        momentum_end=1.0,
        projector_layers=None,
        split_batch_norm=False,
        num_splits=4,
        **kwargs,
    ):
        super().__init__(
            encoder,
            temperature=temperature,
            projection_dim=projection_dim,
            hidden_dim=hidden_dim,
            momentum=momentum,
            momentum_end=momentum_end,
            split_batch_norm=split_batch_norm,
            num_splits=num_splits,
            **kwargs,
        )
        self.projector_layers = int(projector_layers or (3 if isinstance(self.encoder, ViT) else 2))
        self.projector = ProjectionHead(
            self.hidden_dim,
            self.projection_dim,
            num_layers=self.projector_layers,
            output_batch_norm=True,
            initializer=self.head_initializer,
        )
        # builder.py: MoCo_ViT's predictor is `_build_mlp(2, ...)` with its last BN, MoCo_ResNet's
        # `_build_mlp(2, ..., last_bn=False)`; both without biases.
        self.predictor = PredictionHead(
            self.hidden_dim,
            self.projection_dim,
            output_batch_norm=isinstance(self.encoder, ViT),
            output_bias=False,
            initializer=self.head_initializer,
        )
        self.projector.build((None, self.feature_dim))
        self.predictor.build((None, self.projection_dim))

    def ssl_forward(self, views, training):
        v1, v2 = views
        z1, z2 = self.query(v1, training), self.query(v2, training)
        k1, k2 = self.key(v1, training), self.key(v2, training)
        q1, q2 = self.predictor(z1, training=training), self.predictor(z2, training=training)
        return {"z1": z1, "q1": q1, "q2": q2, "k1": k1, "k2": k2}

    def compute_ssl_loss(self, outputs):
        t = self.temperature
        loss = losses.info_nce(outputs["q1"], outputs["k2"], t) + losses.info_nce(outputs["q2"], outputs["k1"], t)
        return 2.0 * t * loss, {}  # scaled by 2 tau as in the MoCo v3 code
