"""MoCo v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning")."""

import keras

from keras_ssl import losses
from keras_ssl.layers.heads import ProjectionHead
from keras_ssl.layers.memory import MemoryBank
from keras_ssl.methods.moco import MoCo
from keras_ssl.views.recipes import mocov2_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class MoCoV2(MoCo):
    """MoCo v2: queries classified against their keys among a queue of past keys.

    A query `q` (encoder + 2-layer MLP projector) is contrasted with its key
    `k` (the momentum encoder's projection of the other view) among a queue
    of past keys, InfoNCE at temperature 0.2; the batch's keys then enter
    the queue. Split BatchNorm (on by default) simulates shuffle-BN.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        temperature: InfoNCE temperature (> 0); paper: 0.2.
        queue_size: queue length (>= the batch size); 4096 suits CIFAR
            subsets (paper: 65536 on ImageNet).
        projection_dim: projector output width (paper: 128).
        hidden_dim: projector hidden width; defaults to `D` (paper: 2048 = D).
        momentum: key-encoder EMA momentum (paper: 0.999 on ImageNet; 0.99
            suits CIFAR-length runs, as solo-learn's CIFAR recipe).
        momentum_end: momentum at the last step; defaults to `momentum`
            (constant, as the paper).
        split_batch_norm: simulate shuffle-BN on one device.
        num_splits: sub-batches of split BatchNorm (divides the batch size).
        views: a `TwoViews`; defaults to SimCLR's augmentations with crop
            scale (0.2, 1) (`simclr_views`), MoCo v2's recipe.
        loss: `"info_nce"`, or `"dcl"` / `"dclw"`: the positive left out of
            the denominator (Yeh et al. 2022), DCLW weighting it by `sigma`.
        sigma: DCLW's von Mises-Fisher weighting scale, > 0 (paper: 0.5).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = keras_ssl.MoCoV2(encoder, queue_size=64, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=keras.optimizers.SGD(0.06, momentum=0.9))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history), model.momentum, model.momentum_end
        (['loss', 'z_std'], 0.99, 0.99)
    """

    version = 2
    view_recipe = staticmethod(mocov2_views)
    gathered_outputs = ("z1", "k2")

    def __init__(
        self,
        encoder,
        *,
        temperature=0.2,
        queue_size=4096,
        projection_dim=128,
        hidden_dim=None,
        momentum=0.99,
        momentum_end=None,
        split_batch_norm=True,
        num_splits=4,
        loss="info_nce",
        sigma=0.5,
        **kwargs,
    ):
        if int(queue_size) < 2:
            raise ValueError(f"`queue_size` must be >= 2, got {queue_size}.")
        if loss not in ("info_nce", "dcl", "dclw") or not sigma > 0:
            raise ValueError(f"`loss` must be 'info_nce', 'dcl' or 'dclw' and `sigma` > 0, got {loss!r}, {sigma}.")
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
        self.queue_size, self.loss, self.sigma = int(queue_size), loss, float(sigma)
        # MoCo v2's MLP head has no BatchNorm
        self.projector = ProjectionHead(
            self.hidden_dim, self.projection_dim, batch_norm=False, initializer=self.head_initializer
        )
        self.projector.build((None, self.feature_dim))
        self.queue = MemoryBank(self.queue_size, self.projection_dim, seed=self.next_seed())

    def ssl_forward(self, views, training):
        v1, v2 = views
        return {"z1": self.query(v1, training), "k2": self.key(v2, training)}

    def compute_ssl_loss(self, outputs):
        # The official code's logits [q.k+, q.queue] / T: the queue alone
        # holds the negatives (read before this step's keys enter it).
        weighting = "von_mises" if self.loss == "dclw" else None
        loss = losses.info_nce(
            outputs["z1"],
            outputs["k2"],
            self.temperature,
            negatives=self.queue.read(),
            in_batch_negatives=False,
            decoupled=self.loss != "info_nce",
            weighting=weighting,
            sigma=self.sigma,
        )
        return loss, {}

    def update_state(self, outputs):
        self.queue.enqueue(outputs["k2"])
