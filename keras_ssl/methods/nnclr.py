"""NNCLR (Dwibedi et al. 2021, "With a Little Help from My Friends:
Nearest-Neighbor Contrastive Learning of Visual Representations")."""

import keras

from keras_ssl import losses
from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import PredictionHead, ProjectionHead
from keras_ssl.layers.memory import MemoryBank, nearest_neighbour
from keras_ssl.views.recipes import byol_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class NNCLR(SSLModel):
    """NNCLR: the positive is the nearest neighbour from a support queue.

    Each view's projection `z` is replaced by its nearest neighbour (cosine)
    among a FIFO support set of past projections, `NN(z)` (no gradient),
    which is contrasted against the other view's prediction `p` with
    in-batch negatives: `(info_nce(NN(z1), p2) + info_nce(NN(z2), p1)) / 2`
    at temperature 0.1. The batch's `z1` then enter the support set.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        temperature: InfoNCE temperature (> 0); paper: 0.1.
        queue_size: support set size (>= the batch size); 4096 suits CIFAR
            subsets (paper: 98304 on ImageNet).
        projection_dim: projector output width (paper: 256).
        hidden_dim: projector and predictor hidden width; defaults to
            `min(2048, 4 * D)` for an encoder of `D` features.
        views: a `TwoViews`; defaults to `byol_views` (as the paper).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = keras_ssl.NNCLR(encoder, queue_size=64, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['loss', 'z_std']
    """

    default_head_initializer = "torch"  # PyTorch's `nn.Linear` default, solo-learn's (no official code)
    view_recipe = staticmethod(byol_views)
    gathered_outputs = ("z1", "z2", "p1", "p2", "nn1", "nn2")
    monitored_output = "z1"
    # The support-set lookup, shared with NNBYOL and NNSiam (`MemoryBank.nearest`).
    nearest_neighbour = staticmethod(nearest_neighbour)

    def __init__(
        self,
        encoder,
        *,
        temperature=0.1,
        queue_size=4096,
        projection_dim=256,
        hidden_dim=None,
        **kwargs,
    ):
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        if int(queue_size) < 2:
            raise ValueError(f"`queue_size` must be >= 2, got {queue_size}.")
        super().__init__(encoder, **kwargs)
        self.temperature, self.queue_size = float(temperature), int(queue_size)
        self.projection_dim = int(projection_dim)
        self.hidden_dim = int(hidden_dim or min(2048, 4 * self.feature_dim))
        # The paper: BatchNorm after every projector layer, the output included.
        self.projector = ProjectionHead(
            self.hidden_dim,
            self.projection_dim,
            num_layers=3,
            output_batch_norm=True,
            initializer=self.head_initializer,
        )
        self.predictor = PredictionHead(self.hidden_dim, self.projection_dim, initializer=self.head_initializer)
        self.projector.build((None, self.feature_dim))
        self.predictor.build((None, self.projection_dim))
        self.support = MemoryBank(self.queue_size, self.projection_dim, seed=self.next_seed())

    def ssl_forward(self, views, training):
        z1, z2 = self.embed(views, self.projector, training)
        outputs = {
            "z1": z1,
            "z2": z2,
            "p1": self.predictor(z1, training=training),
            "p2": self.predictor(z2, training=training),
            "nn1": self.support.nearest(z1),
            "nn2": self.support.nearest(z2),
        }
        return outputs

    def update_state(self, outputs):
        self.support.enqueue(outputs["z1"])

    def compute_ssl_loss(self, outputs):
        t = self.temperature
        loss = 0.5 * (
            losses.info_nce(outputs["nn1"], outputs["p2"], t) + losses.info_nce(outputs["nn2"], outputs["p1"], t)
        )
        return loss, {}
