"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent")."""

import keras
from keras import ops

from keras_ssl import losses
from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import PredictionHead, ProjectionHead
from keras_ssl.views.recipes import byol_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class BYOL(SSLModel):
    """BYOL: an online network predicts a momentum target's projection.

    Two asymmetric views go through the online encoder, projector and
    predictor (`p1, p2`) and through the target encoder and projector, an
    exponential moving average of the online ones (`t1, t2`). The loss is
    the symmetric `byol_loss(p1, sg(t2)) + byol_loss(p2, sg(t1))`; the
    momentum follows a cosine schedule from `momentum` to `momentum_end`.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        projection_dim: projector (and predictor) output width (paper: 256).
        hidden_dim: projector and predictor hidden width (paper: 4096);
            defaults to `min(4096, 4 * D)` for an encoder of `D` features.
        momentum: EMA momentum at step 0, in [0, 1] (paper: 0.996).
        momentum_end: EMA momentum at the last step (paper: 1.0).
        views: a `TwoViews`; defaults to `byol_views` (the paper's
            asymmetric blur and solarisation).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = keras_ssl.BYOL(encoder, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history), model.momentum, model.momentum_end
        (['loss', 'z_std'], 0.996, 1.0)
    """

    resnet_init = ("haiku", True)  # Haiku's ResNet: its convs' default, last BN scale of each block at 0
    default_head_initializer = "haiku"  # Haiku's `Linear` default, BYOL's official code's

    view_recipe = staticmethod(byol_views)
    momentum_pairs = (("encoder", "target_encoder"), ("projector", "target_projector"))
    encoder_batches = "view"  # byol_experiment.py: the network runs on view1, then on view2
    gathered_outputs = ("z1", "z2", "p1", "p2", "t1", "t2")
    monitored_output = "z1"

    def __init__(
        self,
        encoder,
        *,
        projection_dim=256,
        hidden_dim=None,
        momentum=0.996,
        momentum_end=1.0,
        **kwargs,
    ):
        super().__init__(encoder, momentum=momentum, momentum_end=momentum_end, **kwargs)
        self.projection_dim = int(projection_dim)
        self.hidden_dim = int(hidden_dim or min(4096, 4 * self.feature_dim))
        self.projector = ProjectionHead(self.hidden_dim, self.projection_dim, initializer=self.head_initializer)
        self.predictor = PredictionHead(self.hidden_dim, self.projection_dim, initializer=self.head_initializer)
        self.projector.build((None, self.feature_dim))
        self.predictor.build((None, self.projection_dim))

    def ssl_forward(self, views, training):
        z1, z2 = self.embed(views, self.projector, training)
        p1, p2 = self.predictor(z1, training=training), self.predictor(z2, training=training)
        t1, t2 = self.embed(views, self.target_projector, training, encoder=self.target_encoder)
        return {"z1": z1, "z2": z2, "p1": p1, "p2": p2, "t1": ops.stop_gradient(t1), "t2": ops.stop_gradient(t2)}

    def compute_ssl_loss(self, outputs):
        loss = losses.byol_loss(outputs["p1"], outputs["t2"])
        return loss + losses.byol_loss(outputs["p2"], outputs["t1"]), {}
