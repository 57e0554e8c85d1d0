"""VIbCReg (Lee & Aune 2021, "VIbCReg: Variance-Invariance-better-Covariance Regularization")."""

import keras

from keras_ssl.layers.iternorm import IterNorm
from keras_ssl.losses.covariance import vibcreg_terms
from keras_ssl.methods.vicreg import VICReg


@keras.saving.register_keras_serializable(package="keras_ssl")
class VIbCReg(VICReg):
    """VIbCReg: VICReg with a whitened projector and a normalised covariance term.

    The projector (3 Dense layers, BN + ReLU between them, as VICReg's) ends
    with an `IterNorm` layer that whitens groups of its outputs. The loss is
    VICReg's invariance (mean squared distance of the views' projections)
    and variance (std hinge, summed over the two views) plus a covariance
    term on the correlation matrix: each view's projections centred and
    scaled to unit norm per feature, then the mean squared off-diagonal
    entry. The loss is `sim_coeff * invariance + std_coeff * variance +
    cov_coeff * covariance`; the three unweighted terms are logged.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        projection_dim: width of the projector (hidden and output). The
            paper's 4096 (2048 in solo-learn's CIFAR recipe); the default
            `min(2048, 8 * D)` shrinks with small encoders, as VICReg's.
        sim_coeff: weight of the invariance term (25, the paper's).
        std_coeff: weight of the variance term (25).
        cov_coeff: weight of the normalised covariance term (200).
        eps: added to the variance under the square root (1e-4).
        iternorm: end the projector with `IterNorm` (the paper's default).
        iternorm_groups: IterNorm groups asked for (64: groups of 32 for 2048).
        iternorm_iterations: IterNorm's Newton iterations (5).
        views: a `TwoViews`; defaults to `byol_views` (as this library's VICReg:
            the paper trains on time series, with no image recipe).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> from keras_ssl.methods.vibcreg import VIbCReg
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = VIbCReg(encoder, projection_dim=16, iternorm_groups=4)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history), model.whitening.group_size
        (['covariance', 'invariance', 'loss', 'variance', 'z_std'], 4)
    """

    def __init__(
        self,
        encoder,
        *,
        projection_dim=None,
        sim_coeff=25.0,
        std_coeff=25.0,
        cov_coeff=200.0,
        eps=1e-4,
        iternorm=True,
        iternorm_groups=64,
        iternorm_iterations=5,
        **kwargs,
    ):
        # VICReg's projector, checks and loss weights; the whitening and the loss terms are VIbCReg's.
        super().__init__(
            encoder,
            projection_dim=projection_dim,
            sim_coeff=sim_coeff,
            std_coeff=std_coeff,
            cov_coeff=cov_coeff,
            eps=eps,
            **kwargs,
        )
        self.iternorm = bool(iternorm)
        self.iternorm_groups, self.iternorm_iterations = int(iternorm_groups), int(iternorm_iterations)
        self.whitening = None
        if self.iternorm:
            self.whitening = IterNorm(self.iternorm_groups, iterations=self.iternorm_iterations)
            self.whitening.build((None, self.projection_dim))

    def project(self, features, training):
        """The projector, then IterNorm (each view whitened with its own batch statistics)."""
        z = self.projector(features, training=training)
        return self.whitening(z, training=training) if self.iternorm else z

    def ssl_forward(self, views, training):
        z1, z2 = (self.project(h, training) for h in self.encode(views, training))
        return {"z1": z1, "z2": z2}

    def loss_terms_of(self, z1, z2):
        return vibcreg_terms(z1, z2, self.eps)
