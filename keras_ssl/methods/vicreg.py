"""VICReg (Bardes, Ponce & LeCun 2022, "Variance-Invariance-Covariance Regularization")."""

import keras

from keras_ssl import losses
from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import ProjectionHead
from keras_ssl.views.recipes import byol_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class VICReg(SSLModel):
    """VICReg: invariance, variance and covariance terms on the projections.

    The two views' projections `z1, z2` are pulled together (mean squared
    distance, the invariance), each feature's batch std is kept above 1 by a
    hinge on `sqrt(var + eps)` (the variance, which prevents collapse), and
    the off-diagonal covariances are pushed to 0 (the covariance). The loss
    is `sim_coeff * invariance + std_coeff * variance + cov_coeff *
    covariance`; the three unweighted terms are logged as metrics.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        projection_dim: width of the 3-layer projector (hidden and output).
            The paper's 8192 is for ImageNet; the default `min(2048, 8 * D)`
            is the common CIFAR width (2048 for ResNet-18) and shrinks with
            small encoders.
        sim_coeff: weight of the invariance term (25, the paper's).
        std_coeff: weight of the variance term (25).
        cov_coeff: weight of the covariance term (1).
        eps: added to the variance under the square root (1e-4).
        views: a `TwoViews`; defaults to `default_views` (SimCLR's
            augmentations, as the official code for CIFAR-size images).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    VICReg goes NaN with too high a learning rate and no warm-up (lightly
    #1032): start around Adam 1e-3.

    Example:
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = keras_ssl.VICReg(encoder, projection_dim=16)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['covariance', 'invariance', 'loss', 'variance', 'z_std']
    """

    resnet_init = ("torchvision", True)  # main_vicreg.py: resnet50(zero_init_residual=True)
    default_head_initializer = "torch"  # PyTorch's `nn.Linear` default, the official code's

    view_recipe = staticmethod(byol_views)
    encoder_batches = "view"  # main_vicreg.py: self.backbone(x), then self.backbone(y)
    gathered_outputs = ("z1", "z2")
    monitored_output = "z1"
    loss_terms = ("invariance", "variance", "covariance")

    def __init__(
        self,
        encoder,
        *,
        projection_dim=None,
        sim_coeff=25.0,
        std_coeff=25.0,
        cov_coeff=1.0,
        eps=1e-4,
        **kwargs,
    ):
        if projection_dim is not None and int(projection_dim) < 1:
            raise ValueError(f"`projection_dim` must be a positive integer, got {projection_dim}.")
        coeffs = {"sim_coeff": sim_coeff, "std_coeff": std_coeff, "cov_coeff": cov_coeff}
        for name, value in coeffs.items():
            if not value >= 0:
                raise ValueError(f"`{name}` must be >= 0, got {value}.")
        if not sum(coeffs.values()) > 0:
            raise ValueError("at least one of `sim_coeff`, `std_coeff`, `cov_coeff` must be > 0.")
        if not eps > 0:
            raise ValueError(f"`eps` must be > 0, got {eps}.")
        super().__init__(encoder, **kwargs)
        self.projection_dim = int(projection_dim or min(2048, 8 * self.feature_dim))
        self.sim_coeff, self.std_coeff, self.cov_coeff = (float(v) for v in coeffs.values())
        self.eps = float(eps)
        self.projector = ProjectionHead(
            self.projection_dim, self.projection_dim, num_layers=3, initializer=self.head_initializer
        )
        self.projector.build((None, self.feature_dim))

    def ssl_forward(self, views, training):
        z1, z2 = self.embed(views, self.projector, training)
        return {"z1": z1, "z2": z2}

    def loss_terms_of(self, z1, z2):
        """The three unweighted terms (VIbCReg replaces them with its normalised ones)."""
        return losses.vicreg_terms(z1, z2, self.eps)

    def compute_ssl_loss(self, outputs):
        terms = self.loss_terms_of(outputs["z1"], outputs["z2"])
        loss = (
            self.sim_coeff * terms["invariance"]
            + self.std_coeff * terms["variance"]
            + self.cov_coeff * terms["covariance"]
        )
        return loss, terms
