"""What MoCo v2 and v3 share: a momentum key encoder and split BatchNorm (`moco_v2.py`, `moco_v3.py`)."""

import keras
from keras import ops

from keras_ssl.engine import SSLModel
from keras_ssl.layers.normalization import split_batch


@keras.saving.register_keras_serializable(package="keras_ssl")
class MoCo(SSLModel):
    """MoCo: what v2 and v3 share, a momentum key encoder and split BatchNorm.

    `MoCo(encoder, version=2)` (the default) makes a `MoCoV2`, `version=3` a `MoCoV3`;
    both are subclasses, so `isinstance(model, keras_ssl.MoCo)` holds.

    Split BatchNorm simulates MoCo's shuffle-BN on one device: in training
    the networks run on `num_splits` sub-batches (`layers.normalization.split_batch`),
    so BatchNorm statistics are per sub-batch: contiguous blocks for the
    queries, rows interleaved by index modulo `num_splits` for the keys.

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
            # The versions are subclasses in their own modules (imported with keras_ssl.methods).
            made = next((c for c in MoCo.__subclasses__() if c.version == version), None)
            if made is None:
                raise ValueError(f"`version` must be 2 or 3, got {version}.")
        elif version not in (None, cls.version):
            raise ValueError(f"{cls.__name__} is MoCo version {cls.version}, got version={version}.")
        return super().__new__(made, *args, **kwargs)

    momentum_pairs = (("encoder", "key_encoder"), ("projector", "key_projector"))
    monitored_output = "z1"
    default_head_initializer = "torch"  # PyTorch's `nn.Linear` default, the official code's

    def __init__(
        self,
        encoder,
        *,
        temperature,
        projection_dim,
        hidden_dim,
        split_batch_norm,
        num_splits,
        version=None,
        **kwargs,
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

        def embed(x):
            return projector(self.encode([x], training, encoder=encoder)[0], training=training)

        if not (self.split_batch_norm and training):
            return embed(view)
        if view.shape[0] is not None:
            self.check_batch_size(view.shape[0])
        return split_batch(embed, view, self.num_splits, interleave=interleave)

    def query(self, view, training):
        """The online encoder's projection of `view`."""
        return self._embed(view, training, self.encoder, self.projector)

    def key(self, view, training):
        """The momentum encoder's projection of `view`, without gradient."""
        key = self._embed(view, training, self.key_encoder, self.key_projector, interleave=True)
        return ops.stop_gradient(key)
