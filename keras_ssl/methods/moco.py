"""MoCo v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive
Learning") and MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training
Self-Supervised Vision Transformers")."""

import keras
import numpy as np
from keras import ops

from keras_ssl import losses
from keras_ssl.layers.augment import byol_augmenters, simclr_augmenter
from keras_ssl.layers.heads import PredictionHead, ProjectionHead
from keras_ssl.layers.memory import MemoryBank
from keras_ssl.methods.base import SSLModel


@keras.saving.register_keras_serializable(package="keras_ssl")
class MoCo(SSLModel):
    """MoCo: queries contrast against a momentum encoder's keys.

    v2: a query `q` (encoder + MLP projector) is classified against its key
    `k` (the momentum encoder's projection of the other view) among a queue
    of past keys, InfoNCE at temperature 0.2; the batch's keys then enter
    the queue. v3: no queue, a predictor on the query side, in-batch keys,
    symmetric loss `2 tau (ctr(q1, k2) + ctr(q2, k1))`, momentum 0.99 -> 1.

    Split BatchNorm simulates MoCo's shuffle-BN on one device: in training
    the networks run on `num_splits` sub-batches, so BatchNorm statistics
    are per sub-batch: contiguous blocks for the queries, rows interleaved
    by index modulo `num_splits` for the keys, so a query's and its key's
    sub-batches share only `1 / num_splits` of their rows (as a random
    shuffle does on average). The interleave is fixed, not random: it needs
    no seed and a resumed run repeats it exactly.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        version: 2 or 3.
        temperature: InfoNCE temperature (> 0); default 0.2 (v2), 1.0 (v3).
        queue_size: v2 queue length (>= the batch size); 4096 suits CIFAR
            subsets (paper: 65536 on ImageNet).
        projection_dim: projector output width; default 128 (v2), 256 (v3).
        hidden_dim: projector / predictor hidden width; defaults to `D`.
        momentum: EMA momentum at step 0 in [0, 1]; default 0.99.
        momentum_end: momentum at the last step (cosine schedule); default
            `momentum` for v2 (constant, as the paper), 1.0 for v3.
        split_batch_norm: simulate shuffle-BN (default: on for v2).
        num_splits: sub-batches of split BatchNorm (divides the batch size).
        augmenters: two view layers; default `simclr_augmenter` with crop
            scale (0.2, 1) for v2, `byol_augmenters` for v3.
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, ...).

    Example:
        >>> model = keras_ssl.MoCo(keras_ssl.backbones.resnet18(), version=2)
        >>> model.compile(optimizer=keras.optimizers.SGD(0.06, momentum=0.9))
        >>> model.fit(x_train, epochs=10, batch_size=256)
    """

    def __init__(
        self, encoder, *, version=2, temperature=None, queue_size=4096, projection_dim=None,
        hidden_dim=None, momentum=0.99, momentum_end=None, split_batch_norm=None, num_splits=4,
        augmenters=None, **kwargs,
    ):
        if version not in (2, 3):
            raise ValueError(f"`version` must be 2 or 3, got {version}.")
        temperature = (0.2 if version == 2 else 1.0) if temperature is None else temperature
        momentum_end = (momentum if version == 2 else 1.0) if momentum_end is None else momentum_end
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        for name, tau in (("momentum", momentum), ("momentum_end", momentum_end)):
            if not 0.0 <= tau <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {tau}.")
        if int(queue_size) < 2 or int(num_splits) < 1:
            raise ValueError(f"need queue_size >= 2 and num_splits >= 1, got {queue_size}, {num_splits}.")
        if augmenters is not None and len(augmenters) != 2:
            raise ValueError(f"`augmenters` must hold 2 layers (one per view), got {len(augmenters)}.")
        super().__init__(encoder, **kwargs)
        self.version, self.temperature = version, float(temperature)
        self.queue_size, self.num_splits = int(queue_size), int(num_splits)
        self.momentum, self.momentum_end = float(momentum), float(momentum_end)
        self.split_batch_norm = version == 2 if split_batch_norm is None else bool(split_batch_norm)
        self.projection_dim = int(projection_dim or (128 if version == 2 else 256))
        self.hidden_dim = int(hidden_dim or self.feature_dim)
        channels = self.image_shape[-1]
        if augmenters is None and version == 2:
            augmenters = [simclr_augmenter(self.image_size, channels, crop_scale=(0.2, 1.0),
                                           seed=self.next_seed()) for _ in range(2)]
        self.augmenters = list(augmenters or byol_augmenters(self.image_size, channels, seed=self.next_seed()))
        if version == 2:  # MoCo v2's MLP head has no BatchNorm
            self.projector = ProjectionHead(self.hidden_dim, self.projection_dim, batch_norm=False)
            self.queue = MemoryBank(self.queue_size, self.projection_dim, seed=self.next_seed())
        else:
            self.projector = ProjectionHead(self.hidden_dim, self.projection_dim, num_layers=3,
                                            output_batch_norm=True)
            self.predictor = PredictionHead(self.hidden_dim, self.projection_dim)
            self.predictor.build((None, self.projection_dim))
        self.projector.build((None, self.feature_dim))
        self.key_encoder = self.momentum_target(self.encoder)
        self.key_projector = self.momentum_target(self.projector)
        self.set_momentum_schedule(self.momentum, self.momentum_end)

    def _check_fit_data(self, x, y, batch_size):
        x, y = super()._check_fit_data(x, y, batch_size)
        if isinstance(x, np.ndarray):
            self._check_batch_size(min(batch_size or 32, len(x)))
        return x, y

    def _check_batch_size(self, batch):
        if self.version == 2:
            self.queue.check_batch_size(batch)
        if self.split_batch_norm and batch % self.num_splits:
            raise ValueError(f"split BatchNorm needs a batch size divisible by num_splits="
                             f"{self.num_splits}, got {batch}.")

    def build_inputs(self):
        # Split BatchNorm needs num_splits rows.
        return ops.zeros((max(2, self.num_splits),) + self.image_shape)

    def _embed(self, view, training, encoder, projector, interleave=False):
        """Projections of `view`; with split BN, per sub-batch (see the class doc)."""
        if not (self.split_batch_norm and training):
            return projector(self.encode([view], training, encoder=encoder)[0], training=training)
        if view.shape[0] is not None:
            self._check_batch_size(view.shape[0])
        if interleave:  # sub-batch g holds the rows i with i % num_splits == g
            position = ops.arange(ops.shape(view)[0])
            size = ops.shape(view)[0] // self.num_splits
            order = (position % size) * self.num_splits + position // size
            view = ops.take(view, order, axis=0)
        chunks = ops.split(view, self.num_splits, axis=0)
        z = [projector(self.encode([c], training, encoder=encoder)[0], training=training) for c in chunks]
        z = ops.concatenate(z, axis=0)
        return ops.take(z, ops.argsort(order), axis=0) if interleave else z

    def _key(self, view, training):
        key = self._embed(view, training, self.key_encoder, self.key_projector, interleave=True)
        return ops.stop_gradient(key)

    def ssl_forward(self, images, training):
        if training:
            tau = self.current_momentum()
            self.momentum_update(self.encoder, self.key_encoder, tau)
            self.momentum_update(self.projector, self.key_projector, tau)
        v1, v2 = [augment(images, training=True) for augment in self.augmenters]
        z1, k2 = self._embed(v1, training, self.encoder, self.projector), self._key(v2, training)
        if self.version == 2:
            queue = self.queue.read()  # the negatives of this step, read before enqueue
            if training:
                self.queue.enqueue(k2)
            return {"z1": z1, "q1": z1, "k2": k2, "queue": queue}
        z2, k1 = self._embed(v2, training, self.encoder, self.projector), self._key(v1, training)
        q1, q2 = self.predictor(z1, training=training), self.predictor(z2, training=training)
        return {"z1": z1, "q1": q1, "q2": q2, "k1": k1, "k2": k2}

    def compute_ssl_loss(self, outputs):
        t = self.temperature
        if self.version == 2:
            return losses.info_nce(outputs["q1"], outputs["k2"], t, negatives=outputs["queue"]), {}
        loss = losses.info_nce(outputs["q1"], outputs["k2"], t) + losses.info_nce(
            outputs["q2"], outputs["k1"], t)
        return 2.0 * t * loss, {}  # scaled by 2 tau as in the MoCo v3 code

    def get_config(self):
        config = super().get_config()
        config.update(
            version=self.version, temperature=self.temperature, queue_size=self.queue_size,
            projection_dim=self.projection_dim, hidden_dim=self.hidden_dim,
            momentum=self.momentum, momentum_end=self.momentum_end,
            split_batch_norm=self.split_batch_norm, num_splits=self.num_splits,
            augmenters=[keras.saving.serialize_keras_object(a) for a in self.augmenters],
        )
        return config
