"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning")."""

import keras
from keras import ops

from keras_ssl import losses
from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import PredictionHead, ProjectionHead
from keras_ssl.views.recipes import mocov2_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class SimSiam(SSLModel):
    """SimSiam: a predictor and a stop-gradient, no negatives, no momentum.

    Two views go through the encoder and a 3-layer projector (BatchNorm on its
    output) to `z1, z2`; a bottleneck predictor maps them to `p1, p2`. The
    loss is the symmetric negative cosine
    `(D(p1, sg(z2)) + D(p2, sg(z1))) / 2`: the stop-gradient `sg` is what
    keeps the representation from collapsing. The projector's output
    BatchNorm standardises each feature over the batch, so the logged
    `z_std` cannot reach 0 in training: a collapse shows as a fall from
    `1/sqrt(projection_dim)` to about 0.6 of it at batch 16 (measured).

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        projection_dim: projector width (hidden and output). The paper's
            2048 is 4x ResNet-18's 512 features on CIFAR; the default
            `min(2048, 4 * D)` keeps that ratio for smaller encoders.
        prediction_dim: the predictor's bottleneck width; defaults to
            `projection_dim // 4` (the paper's 512 for 2048).
        stop_gradient: for research only. `False` removes the stop-gradient
            (gradients flow into both branches), which collapses the
            representation (the paper's Fig. 2); keep the default `True`.
        views: a `TwoViews`; defaults to `default_views` (SimCLR's
            augmentations with crop scale (0.2, 1), as the paper).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = keras_ssl.SimSiam(encoder, projection_dim=16)
        >>> model.projection_dim, model.prediction_dim
        (16, 4)
        >>> model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['loss', 'z_std']
    """

    resnet_init = ("torchvision", True)  # builder.py: base_encoder(zero_init_residual=True)
    default_head_initializer = "torch"  # PyTorch's `nn.Linear` default, the official code's

    view_recipe = staticmethod(mocov2_views)
    encoder_batches = "view"  # builder.py: z1 = self.encoder(x1), z2 = self.encoder(x2)
    gathered_outputs = ("z1", "z2", "p1", "p2")
    monitored_output = "z1"

    def __init__(
        self,
        encoder,
        *,
        projection_dim=None,
        prediction_dim=None,
        stop_gradient=True,
        **kwargs,
    ):
        for name, value in (("projection_dim", projection_dim), ("prediction_dim", prediction_dim)):
            if value is not None and int(value) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        if not isinstance(stop_gradient, bool):
            raise ValueError(f"`stop_gradient` must be True or False, got {stop_gradient!r}.")
        super().__init__(encoder, **kwargs)
        self.projection_dim = int(projection_dim or min(2048, 4 * self.feature_dim))
        self.prediction_dim = int(prediction_dim or max(1, self.projection_dim // 4))
        self.stop_gradient = stop_gradient
        self.projector = ProjectionHead(
            self.projection_dim,
            self.projection_dim,
            num_layers=3,
            output_batch_norm=True,
            initializer=self.head_initializer,
        )
        self.predictor = PredictionHead(self.prediction_dim, self.projection_dim, initializer=self.head_initializer)
        self.projector.build((None, self.feature_dim))
        self.predictor.build((None, self.projection_dim))

    def ssl_forward(self, views, training):
        z1, z2 = self.embed(views, self.projector, training)
        return {
            "z1": z1,
            "z2": z2,
            "p1": self.predictor(z1, training=training),
            "p2": self.predictor(z2, training=training),
        }

    def distance(self, p, z):
        """The paper's `D(p, z)`: minus the mean cosine, no gradient into `z` (unless `stop_gradient=False`)."""
        # `losses.negative_cosine` stops the gradient into its target; the
        # research-only variant needs the same cosine with gradients in both.
        return losses.negative_cosine(p, z) if self.stop_gradient else _negative_cosine_no_stop(p, z)

    def compute_ssl_loss(self, outputs):
        loss = 0.5 * (self.distance(outputs["p1"], outputs["z2"]) + self.distance(outputs["p2"], outputs["z1"]))
        return loss, {}


def _negative_cosine_no_stop(p, z):
    """`losses.negative_cosine` without its stop-gradient (collapse studies)."""
    return -ops.mean(ops.sum(losses.l2_normalize(p) * losses.l2_normalize(z), axis=-1))
