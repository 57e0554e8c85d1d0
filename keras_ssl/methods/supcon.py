"""SupCon (Khosla et al. 2020, "Supervised Contrastive Learning")."""

import keras
from keras import ops

from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import ProjectionHead
from keras_ssl.losses.contrastive import supcon
from keras_ssl.views.recipes import supcon_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class SupCon(SSLModel):
    """SupCon: SimCLR's views and projector, with every same-label view a positive.

    Each anchor view is pulled toward all views of its class in the batch
    (both views of each same-label image) against the other views,
    `L^sup_out` (`losses.contrastive.supcon`). Label -1 marks an unlabelled
    image, which contrasts as in SimCLR (its only positive is its twin).
    Labels take the place of `y`: `fit(images, labels)` with integer labels
    `(N,)`, or any source of `(images, labels)` batches (`tf.data`,
    `PyDataset`, `ImageFiles(..., with_labels=True)`, torch `DataLoader`,
    generator, list); the engine checks and packs them (`data.per_sample`).

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        temperature: softmax temperature (> 0); paper: 0.1. No
            `base_temperature` rescaling (the loss is the paper's).
        projection_dim: projector output width (paper: 128).
        hidden_dim: projector width; defaults to the encoder's feature size
            (as the paper: 2048 for ResNet-50).
        views: a `TwoViews`; defaults to `supcon_views`, the official
            code's: SimCLR's augmentations with crop scale (0.2, 1), colour
            strength 0.5 and no blur (the paper also tried AutoAugment).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> from keras_ssl.methods.supcon import SupCon
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = SupCon(encoder, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> labels = np.where(np.arange(64) % 4 == 0, -1, y_train)   # a quarter unlabelled
        >>> history = model.fit(x_train, labels, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['loss', 'z_std']
        >>> model.fit(x_train, y_train.astype("float32"), batch_size=16, verbose=0)
        Traceback (most recent call last):
        ...
        ValueError: SupCon labels must be integers (class indices, -1 for unlabelled), got float32.
    """

    default_head_initializer = "torch"  # PyTorch's `nn.Linear` default, the official code's
    view_recipe = staticmethod(supcon_views)
    needs_labels = True
    gathered_outputs = ("z1", "z2", "labels")
    monitored_output = "z1"

    def __init__(self, encoder, *, temperature=0.1, projection_dim=128, hidden_dim=None, **kwargs):
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        super().__init__(encoder, **kwargs)
        self.temperature = float(temperature)
        self.projection_dim = projection_dim
        self.hidden_dim = hidden_dim or self.feature_dim
        # The official code's head: Linear, ReLU, Linear (its output L2-normalised in the loss).
        self.projector = ProjectionHead(
            self.hidden_dim, projection_dim, batch_norm=False, initializer=self.head_initializer
        )
        self.projector.build((None, self.feature_dim))

    def ssl_forward(self, views, labels, training):
        z1, z2 = self.embed(views, self.projector, training)
        return {"z1": z1, "z2": z2, "labels": ops.cast(labels, "int32")}

    def compute_ssl_loss(self, outputs):
        return supcon(outputs["z1"], outputs["z2"], outputs["labels"], self.temperature), {}
