"""MoCo v2 (Chen et al. 2020, "Improved Baselines with Momentum Contrastive
Learning") and MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training
Self-Supervised Vision Transformers")."""

import keras
from keras import ops

from keras_ssl import losses
from keras_ssl.backbones.vit import ViT
from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import PredictionHead, ProjectionHead
from keras_ssl.layers.memory import MemoryBank
from keras_ssl.views.recipes import byol_views, mocov2_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class MoCo(SSLModel):
    """MoCo: what v2 and v3 share, a momentum key encoder and split BatchNorm.

    `MoCo(encoder, version=2)` (the default) makes a `MoCoV2`, `version=3` a `MoCoV3`;
    both are subclasses, so `isinstance(model, keras_ssl.MoCo)` holds.

    Split BatchNorm simulates MoCo's shuffle-BN on one device: in training
    the networks run on `num_splits` sub-batches, so BatchNorm statistics
    are per sub-batch: contiguous blocks for the queries, rows interleaved
    by index modulo `num_splits` for the keys, so a query's and its key's
    sub-batches share only `1 / num_splits` of their rows (as a random
    shuffle does on average). The interleave is fixed, not random: it needs
    no seed and a resumed run repeats it exactly.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        version: 2 (default) or 3, when constructing `MoCo` itself.
        **kwargs: the options of `MoCoV2` or `MoCoV3`.

    Example:
        >>> model = keras_ssl.MoCo(keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8), version=3)
        >>> isinstance(model, keras_ssl.MoCoV3), isinstance(model, keras_ssl.MoCo)
        (True, True)
    """

    version = None

    def __new__(cls, *args, version=None, **kwargs):
        made = cls
        if cls is MoCo:
            version = 2 if version is None else version
            if version not in (2, 3):
                raise ValueError(f"`version` must be 2 or 3, got {version}.")
            made = MoCoV2 if version == 2 else MoCoV3
        elif version not in (None, cls.version):
            raise ValueError(f"{cls.__name__} is MoCo version {cls.version}, got version={version}.")
        return super().__new__(made, *args, **kwargs)

    momentum_pairs = (("encoder", "key_encoder"), ("projector", "key_projector"))
    monitored_output = "z1"

    def __init__(
        self, encoder, *, temperature, projection_dim, hidden_dim, split_batch_norm, num_splits, version=None, **kwargs
    ):
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        if int(num_splits) < 1:
            raise ValueError(f"`num_splits` must be >= 1, got {num_splits}.")
        super().__init__(encoder, **kwargs)
        self.temperature, self.num_splits = float(temperature), int(num_splits)
        self.split_batch_norm = bool(split_batch_norm)
        self.projection_dim = int(projection_dim)
        self.hidden_dim = int(hidden_dim or self.feature_dim)

    def check_batch_size(self, batch_size):
        super().check_batch_size(batch_size)
        if self.split_batch_norm and batch_size % self.num_splits:
            raise ValueError(
                f"split BatchNorm needs a batch size divisible by num_splits={self.num_splits}, got {batch_size}."
            )

    def build_inputs(self):
        # Split BatchNorm needs num_splits rows.
        return ops.zeros((max(2, self.num_splits),) + self.image_shape)

    def _embed(self, view, training, encoder, projector, interleave=False):
        """Projections of `view`; with split BN, per sub-batch (see the class doc)."""
        if not (self.split_batch_norm and training):
            return projector(self.encode([view], training, encoder=encoder)[0], training=training)
        if view.shape[0] is not None:
            self.check_batch_size(view.shape[0])
        if interleave:  # sub-batch g holds the rows i with i % num_splits == g
            position = ops.arange(ops.shape(view)[0])
            size = ops.shape(view)[0] // self.num_splits
            order = (position % size) * self.num_splits + position // size
            view = ops.take(view, order, axis=0)
        chunks = ops.split(view, self.num_splits, axis=0)
        z = [projector(self.encode([c], training, encoder=encoder)[0], training=training) for c in chunks]
        z = ops.concatenate(z, axis=0)
        return ops.take(z, ops.argsort(order), axis=0) if interleave else z

    def query(self, view, training):
        """The online encoder's projection of `view`."""
        return self._embed(view, training, self.encoder, self.projector)

    def key(self, view, training):
        """The momentum encoder's projection of `view`, without gradient."""
        key = self._embed(view, training, self.key_encoder, self.key_projector, interleave=True)
        return ops.stop_gradient(key)


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
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, ...).

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
        self.projector = ProjectionHead(self.hidden_dim, self.projection_dim, batch_norm=False)
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
            non-affine BatchNorm, the 2-layer predictor not.
        split_batch_norm, num_splits: as `MoCoV2` (off: v3 has no shuffle-BN).
        views: a `TwoViews`; defaults to `byol_views` (as the paper).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, ...).

    Example:
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = keras_ssl.MoCoV3(encoder, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=keras_ssl.optimizers.LARS(0.3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history), model.momentum, model.momentum_end
        (['loss', 'z_std'], 0.99, 1.0)
    """

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
            self.hidden_dim, self.projection_dim, num_layers=self.projector_layers, output_batch_norm=True
        )
        self.predictor = PredictionHead(self.hidden_dim, self.projection_dim, output_bias=False)
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
