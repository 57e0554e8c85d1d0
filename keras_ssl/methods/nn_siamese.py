"""NNBYOL and NNSiam: BYOL and SimSiam with NNCLR's nearest-neighbour targets (Dwibedi et al.
2021, "With a Little Help from My Friends"; solo-learn's `nnbyol.py` and `nnsiam.py`)."""

import keras

from keras_ssl import losses
from keras_ssl.layers.memory import MemoryBank
from keras_ssl.methods.byol import BYOL
from keras_ssl.methods.simsiam import SimSiam
from keras_ssl.views.recipes import byol_views


class _NearestNeighbourTargets:
    """Replaces a Siamese method's targets by their nearest neighbours in a FIFO support set.

    The class declares `target_outputs`, the forward's two targets (one per
    view); `nn1, nn2` are their nearest neighbours (cosine) in `self.support`
    as it was before the step, and the first view's target enters the
    support set after the loss. No `__init__` here: the constructor's
    arguments stay those of the method (`MethodContract.hyperparameters`).
    """

    target_outputs = ("z1", "z2")

    @staticmethod
    def _check_queue_size(queue_size):
        if int(queue_size) != queue_size or queue_size < 2:
            raise ValueError(f"`queue_size` must be an integer >= 2, got {queue_size}.")

    def _make_support(self, queue_size):
        self.queue_size = int(queue_size)
        self.support = MemoryBank(self.queue_size, self.projection_dim, seed=self.next_seed())

    def ssl_forward(self, views, training):
        outputs = super().ssl_forward(views, training)
        first, second = self.target_outputs
        return {**outputs, "nn1": self.support.nearest(outputs[first]), "nn2": self.support.nearest(outputs[second])}

    def update_state(self, outputs):
        self.support.enqueue(outputs[self.target_outputs[0]])


@keras.saving.register_keras_serializable(package="keras_ssl")
class NNBYOL(_NearestNeighbourTargets, BYOL):
    """NNBYOL: BYOL predicting the nearest neighbour of the target projection.

    As `BYOL`, but each view's momentum-target projection `t` is replaced by
    its nearest neighbour (cosine) `NN(t)` in a FIFO support set of past
    target projections: the loss is `byol_loss(p1, NN(t2)) + byol_loss(p2, NN(t1))`.
    The batch's `t1` then enter the support set (solo-learn's NNBYOL).

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        queue_size: support set size (>= the batch); 4096 suits CIFAR
            subsets (solo-learn: 65536).
        projection_dim, hidden_dim, momentum, momentum_end: as `BYOL`.
        **kwargs: `SSLModel` options (`views`, `image_size`, `seed`, `head_initializer`, ...).

    Example:
        >>> from keras_ssl.methods.nn_siamese import NNBYOL
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = NNBYOL(encoder, queue_size=64, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history), int(model.support.filled)
        (['loss', 'z_std'], 64)
    """

    target_outputs = ("t1", "t2")
    gathered_outputs = (*BYOL.gathered_outputs, "nn1", "nn2")
    resnet_init = ("torchvision", False)  # solo-learn's torchvision ResNet
    default_head_initializer = "torch"  # not BYOL's: PyTorch's `nn.Linear` default, solo-learn's

    def __init__(
        self,
        encoder,
        *,
        queue_size=4096,
        projection_dim=256,
        hidden_dim=None,
        momentum=0.996,
        momentum_end=1.0,
        **kw,
    ):
        self._check_queue_size(queue_size)
        super().__init__(
            encoder,
            projection_dim=projection_dim,
            hidden_dim=hidden_dim,
            momentum=momentum,
            momentum_end=momentum_end,
            **kw,
        )
        self._make_support(queue_size)

    def compute_ssl_loss(self, outputs):
        loss = losses.byol_loss(outputs["p1"], outputs["nn2"])
        return loss + losses.byol_loss(outputs["p2"], outputs["nn1"]), {}


@keras.saving.register_keras_serializable(package="keras_ssl")
class NNSiam(_NearestNeighbourTargets, SimSiam):
    """NNSiam: SimSiam predicting the nearest neighbour of the other view's projection.

    As `SimSiam`, but each view's projection `z` is replaced by its nearest
    neighbour (cosine) `NN(z)` in a FIFO support set of past projections:
    the loss is `(D(p1, NN(z2)) + D(p2, NN(z1))) / 2`. The batch's `z1`
    then enter the support set (solo-learn's NNSiam).

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        queue_size: support set size (>= the batch); 4096 suits CIFAR
            subsets (solo-learn: 65536).
        projection_dim, prediction_dim, stop_gradient: as `SimSiam`.
        views: a `TwoViews`; defaults to `byol_views` (solo-learn's
            asymmetric augmentations).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> from keras_ssl.methods.nn_siamese import NNSiam
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = NNSiam(encoder, queue_size=64, projection_dim=16)
        >>> model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history), int(model.support.pointer)
        (['loss', 'z_std'], 0)
    """

    view_recipe = staticmethod(byol_views)
    gathered_outputs = (*SimSiam.gathered_outputs, "nn1", "nn2")
    resnet_init = ("torchvision", False)  # solo-learn's torchvision ResNet

    def __init__(self, encoder, *, queue_size=4096, projection_dim=None, prediction_dim=None, stop_gradient=True, **kw):
        self._check_queue_size(queue_size)
        super().__init__(
            encoder, projection_dim=projection_dim, prediction_dim=prediction_dim, stop_gradient=stop_gradient, **kw
        )
        self._make_support(queue_size)

    def compute_ssl_loss(self, outputs):
        loss = 0.5 * (self.distance(outputs["p1"], outputs["nn2"]) + self.distance(outputs["p2"], outputs["nn1"]))
        return loss, {}
