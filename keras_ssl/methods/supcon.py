"""SupCon (Khosla et al. 2020, "Supervised Contrastive Learning")."""

import keras
import numpy as np
from keras import ops

from keras_ssl import backend
from keras_ssl.data import ArrayBatches, prepare_fit_data
from keras_ssl.data.sources import _IndexedBatches
from keras_ssl.engine import SSLModel
from keras_ssl.engine import fit as fit_policy
from keras_ssl.layers.heads import ProjectionHead
from keras_ssl.losses.contrastive import supcon
from keras_ssl.views.recipes import supcon_views

UNLABELLED = -1


@keras.saving.register_keras_serializable(package="keras_ssl")
class SupCon(SSLModel):
    """SupCon: SimCLR's views and projector, with every same-label view a positive.

    Each anchor view is pulled toward all views of its class in the batch
    (both views of each same-label image) against the other views,
    `L^sup_out` (`losses.contrastive.supcon`). Label -1 marks an unlabelled
    image, which contrasts as in SimCLR (its only positive is its twin).
    Labels take the place of `y`: `fit(images, labels)` with integer labels
    `(N,)`, or a `tf.data.Dataset` / `PyDataset` yielding `(images, labels)`.

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
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, ...).

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
        self.projector = ProjectionHead(self.hidden_dim, projection_dim, batch_norm=False)
        self.projector.build((None, self.feature_dim))

    def ssl_forward(self, views, labels, training):
        z1, z2 = self.embed(views, self.projector, training)
        return {"z1": z1, "z2": z2, "labels": ops.cast(labels, "int32")}

    def compute_ssl_loss(self, outputs):
        return supcon(outputs["z1"], outputs["z2"], outputs["labels"], self.temperature), {}

    def check_fit_data(self, x, y, batch_size):
        """Checks `(images, labels)`; returns them packed as the single input `(images, labels)`."""
        if isinstance(x, np.ndarray):
            labels = check_labels(y, len(x))
            x, labels, batch_size = fit_policy.check_fit_data(self, x, labels, batch_size)
            if backend.needs_array_input(self):  # a TF strategy: Keras batches the arrays
                return (x, labels), None, batch_size
            return _Packed(ArrayBatches(x, labels, batch_size or 32, seed=self.seed)), None, None
        if y is not None:
            raise ValueError("SupCon: `y` goes with NumPy images; a dataset yields (images, labels) batches.")
        source, _, _ = prepare_fit_data(
            x, None, batch_size, channels=self.image_shape[-1], value_range=self.value_range,
            min_size=self.image_size, check_batch=self.check_batch_size,
        )  # fmt: skip
        if hasattr(source, "element_spec"):  # tf.data
            if not (isinstance(source.element_spec, tuple) and len(source.element_spec) == 2):
                raise ValueError(f"SupCon's tf.data.Dataset must yield (images, labels), got {source.element_spec}.")
            images, labels = next(iter(source.take(1)))
            check_labels(np.asarray(labels), len(images))
            return source.map(lambda images, labels: ((images, labels),)), None, None
        if isinstance(source, keras.utils.PyDataset):
            packed = _Packed(source)
            _ = packed[0]  # the first batch's labels, checked before any step
            return packed, None, None
        raise TypeError(
            f"SupCon takes (images, labels) arrays, a tf.data.Dataset or a PyDataset, got {type(x).__name__}."
        )


def check_labels(labels, count):
    """SupCon's labels as int32 `(count,)`; a clear ValueError otherwise.

    Example:
        >>> from keras_ssl.methods.supcon import check_labels
        >>> check_labels([3, -1, 0], 3).tolist()
        [3, -1, 0]
    """
    if labels is None:
        raise ValueError("SupCon trains on labelled images: call fit(images, labels) (labels -1: unlabelled).")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"SupCon labels must be integers (class indices, -1 for unlabelled), got {labels.dtype}.")
    if labels.ndim != 1:
        raise ValueError(f"SupCon labels must have shape (N,) (class indices, not one-hot), got {labels.shape}.")
    if len(labels) != count:
        raise ValueError(f"got {count} images but {len(labels)} labels; they must pair up.")
    if labels.size and labels.min() < UNLABELLED:
        raise ValueError(f"SupCon labels must be >= -1 (-1: unlabelled), got {labels.min()}.")
    return labels.astype("int32")


class _Packed(_IndexedBatches):
    """`(images, labels)` batches as the one input `((images, labels),)`, labels checked; keeps the order."""

    def __getitem__(self, index):
        batch = self.source[index]
        if len(batch) != 2:
            raise ValueError(f"SupCon needs (images, labels) batches; batch {index} has {len(batch)} part(s).")
        images = np.asarray(batch[0])
        return ((images, check_labels(np.asarray(batch[1]), len(images))),)
