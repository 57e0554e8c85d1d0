"""SimCLR (Chen et al. 2020a, v2: Chen et al. 2020b)."""

import keras

from keras_ssl import losses
from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import ProjectionHead
from keras_ssl.losses.contrastive import dcl
from keras_ssl.views.recipes import simclr_views

LOSSES = ("nt_xent", "dcl", "dclw")


@keras.saving.register_keras_serializable(package="keras_ssl")
class SimCLR(SSLModel):
    """SimCLR: two augmented views, a projection head, NT-Xent (or DCL).

    For each image two views are drawn from the same augmentation family;
    the encoder and projector map them to `z1, z2`, and NT-Xent pulls each
    view toward its twin against the other `2B - 2` views of the batch.
    `loss="dcl"` / `"dclw"` trains with Decoupled Contrastive Learning
    (Yeh et al. 2022): the twin is left out of the softmax's denominator
    (`losses.contrastive.dcl`), DCLW weighting each positive pair.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        temperature: NT-Xent temperature (> 0). 0.5 suits CIFAR-size batches
            (lightly's default); the paper used 0.1 with batch 4096.
        version: 1 (2-layer projector) or 2 (3-layer projector); both end,
            as the official code, in a bias-free layer and BatchNorm.
        projection_dim: output size of the projector (paper: 128).
        hidden_dim: projector width; defaults to the encoder's feature size
            (as the paper: 2048 for ResNet-50).
        loss: `"nt_xent"` (SimCLR), `"dcl"` or `"dclw"` (DCL's paper:
            temperature 0.1, and DCL's gain is largest at small batches).
        sigma: DCLW's von Mises-Fisher weighting scale, > 0 (paper: 0.5).
        views: a `TwoViews`; defaults to `default_views` (SimCLR's crop,
            flip, colour jitter and grayscale; no blur at CIFAR size).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = keras_ssl.SimCLR(encoder, temperature=0.5, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['loss', 'z_std']
        >>> model.encoder.save("encoder.keras")
        >>> keras_ssl.SimCLR(encoder, loss="dclw", temperature=0.1).loss   # Decoupled Contrastive Learning
        'dclw'
    """

    resnet_init = ("simclr", True)  # the TF ResNet: VarianceScaling() convs, last BN of each block at 0
    default_head_initializer = "simclr"  # `RandomNormal(0.01)` kernels, SimCLR's official code's

    view_recipe = staticmethod(simclr_views)
    gathered_outputs = ("z1", "z2")
    monitored_output = "z1"

    def __init__(
        self,
        encoder,
        *,
        temperature=0.5,
        version=1,
        projection_dim=128,
        hidden_dim=None,
        loss="nt_xent",
        sigma=0.5,
        **kwargs,
    ):
        if loss not in LOSSES:
            raise ValueError(f"`loss` must be one of {LOSSES}, got {loss!r}.")
        if not sigma > 0:
            raise ValueError(f"`sigma` must be > 0, got {sigma}.")
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        if version not in (1, 2):
            raise ValueError(f"`version` must be 1 or 2, got {version}.")
        super().__init__(encoder, **kwargs)
        self.temperature = float(temperature)
        self.version = version
        self.loss, self.sigma = loss, float(sigma)
        self.projection_dim = projection_dim
        self.hidden_dim = hidden_dim or self.feature_dim
        self.projector = self.make_projector(
            self.hidden_dim, projection_dim, version, initializer=self.head_initializer
        )
        self.projector.build((None, self.feature_dim))

    @staticmethod
    def make_projector(hidden_dim, output_dim, version=2, output_batch_norm=True, name=None, initializer="torch"):
        """SimCLR's projector: 2 (v1) or 3 (v2) bias-free layers with BatchNorm (SLIP reuses it).

        The official code's last layer has no bias and, by default, a BatchNorm.

        Args:
            hidden_dim: width of the hidden layers.
            output_dim: output width.
            version: 1 (2 layers) or 2 (3 layers).
            output_batch_norm: BatchNorm on the output.
            name: the layer's name.
            initializer: the Dense layers' initialisation (`ProjectionHead`'s);
                SimCLR passes its `head_initializer` (default "simclr").

        Example:
            >>> head = keras_ssl.SimCLR.make_projector(16, 8, version=1, initializer="simclr")
            >>> tuple(head(ops.ones((4, 32)), training=True).shape)
            (4, 8)
        """
        return ProjectionHead(
            hidden_dim=hidden_dim,
            output_dim=output_dim,
            num_layers=2 if version == 1 else 3,
            output_batch_norm=output_batch_norm,
            name=name,
            initializer=initializer,
        )

    def ssl_forward(self, views, training):
        # tf2/model.py: the projection head runs once on both views' features (tf.concat(features_list, 0)),
        # so its BatchNorm normalises over the 2B rows, as the encoder's does.
        z1, z2 = self.embed(views, self.projector, training, together=True)
        return {"z1": z1, "z2": z2}

    def compute_ssl_loss(self, outputs):
        z1, z2 = outputs["z1"], outputs["z2"]
        if self.loss == "nt_xent":
            return losses.nt_xent(z1, z2, self.temperature), {}
        weighting = "von_mises" if self.loss == "dclw" else None
        return dcl(z1, z2, self.temperature, weighting=weighting, sigma=self.sigma), {}
