"""TiCo (Zhu et al. 2022, "Transformation Invariance and Covariance Contrast")."""

import keras
from keras import ops

from keras_ssl import backend
from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import ProjectionHead
from keras_ssl.losses.covariance import tico_covariance, tico_terms
from keras_ssl.views.recipes import byol_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class TiCo(SSLModel):
    """TiCo: transformation invariance plus a contrast with a running covariance.

    The first view goes through the online encoder and projector (`z1`), the
    second through their momentum target (`z2`, no gradient), as lightly's
    reference. With rows L2-normalised, the loss is `1 - mean <z1, z2>`
    (the invariance) plus `rho * mean z1 C z1^T` (the covariance contrast),
    where `C = beta * C_prev + (1 - beta) * z1^T z1 / B` is a running
    covariance of the online embeddings of the global batch (no gradient):
    each embedding is pushed away from the directions the past batches
    occupied, a contrast with an implicit memory bank of unlimited size.
    `C` is a non-trainable variable, updated after the loss has read
    `C_prev`, and saved with the model. The two unweighted terms are logged.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        projection_dim: projector output width (paper: 256).
        hidden_dim: projector hidden width (paper: 4096); defaults to
            `min(4096, 4 * D)` for an encoder of `D` features.
        beta: momentum of the running covariance, in [0, 1) (paper: 0.9).
        rho: weight of the covariance contrast (8, lightly's ImageNet value).
        momentum: target EMA momentum at step 0 (0.99), cosine to
            `momentum_end` (1.0).
        views: a `TwoViews`; defaults to `byol_views` (BYOL's asymmetric
            augmentations, as the paper).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> from keras_ssl.methods.tico import TiCo
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = TiCo(encoder, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history), tuple(model.covariance.shape)
        (['covariance_contrast', 'invariance', 'loss', 'z_std'], (8, 8))
    """

    default_head_initializer = "torch"  # PyTorch's `nn.Linear` default, lightly's
    view_recipe = staticmethod(byol_views)
    momentum_pairs = (("encoder", "target_encoder"), ("projector", "target_projector"))
    gathered_outputs = ("z1", "z2")
    monitored_output = "z1"
    loss_terms = ("invariance", "covariance_contrast")

    def __init__(
        self,
        encoder,
        *,
        projection_dim=256,
        hidden_dim=None,
        beta=0.9,
        rho=8.0,
        momentum=0.99,
        momentum_end=1.0,
        **kwargs,
    ):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"`beta` must be in [0, 1), got {beta}.")
        if not rho >= 0:
            raise ValueError(f"`rho` must be >= 0, got {rho}.")
        if int(projection_dim) < 1:
            raise ValueError(f"`projection_dim` must be a positive integer, got {projection_dim}.")
        super().__init__(encoder, momentum=momentum, momentum_end=momentum_end, **kwargs)
        self.projection_dim = int(projection_dim)
        self.hidden_dim = int(hidden_dim or min(4096, 4 * self.feature_dim))
        self.beta, self.rho = float(beta), float(rho)
        self.projector = ProjectionHead(self.hidden_dim, self.projection_dim, initializer=self.head_initializer)
        self.projector.build((None, self.feature_dim))
        dim = self.projection_dim
        self.covariance = self.add_weight(name="covariance", shape=(dim, dim), initializer="zeros", trainable=False)

    def ssl_forward(self, views, training):
        (z1,) = self.embed(views[:1], self.projector, training)
        (z2,) = self.embed(views[1:], self.target_projector, training, encoder=self.target_encoder)
        return {"z1": z1, "z2": ops.stop_gradient(z2)}

    def compute_ssl_loss(self, outputs):
        terms = tico_terms(outputs["z1"], outputs["z2"], self.covariance, self.beta)
        return terms["invariance"] + self.rho * terms["covariance_contrast"], terms

    def update_state(self, outputs):
        # The same C the loss used: the running covariance of the global batch's online embeddings.
        self.covariance.assign(tico_covariance(backend.gather(outputs["z1"]), self.covariance, self.beta))
