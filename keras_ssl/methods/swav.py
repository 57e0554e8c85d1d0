"""SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments")."""

import keras
from keras import ops

from keras_ssl import losses
from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import ProjectionHead, Prototypes
from keras_ssl.layers.memory import MemoryBank
from keras_ssl.views.multi_crop import multi_crop_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class SwAV(SSLModel):
    """SwAV: predict one crop's cluster codes from every other crop.

    Multi-crop views (2 global, any number of local) go through the
    encoder (once per resolution), the projector and L2 normalisation; their
    scores against learnable unit-norm prototypes are turned into
    equipartitioned codes by Sinkhorn-Knopp for the two global crops, and
    each code is predicted from the other crops' softmax scores (swapped
    prediction, `keras_ssl.losses.swav`). The prototypes are frozen for the
    first `freeze_prototypes_steps` steps. With `queue_size > 0` a queue of
    past global-crop embeddings (one per global crop) joins Sinkhorn once it
    is full, which SwAV needs when batches are small.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features; it
            must accept both crop sizes (e.g. built with input `(None, None, C)`;
            then pass `input_shape=`).
        num_prototypes: number of prototypes `K` (paper: 3000 on ImageNet).
        projection_dim: projector output width (paper: 128).
        hidden_dim: projector hidden width; defaults to `min(2048, 4 * D)`
            (paper: 2048 for ResNet-50's 2048 features).
        temperature: softmax temperature of the predictions (> 0; paper 0.1).
        epsilon: Sinkhorn regularisation (> 0); lower it if the loss sticks
            at `ln(K)` (collapse).
        sinkhorn_iterations: Sinkhorn rounds (>= 1).
        freeze_prototypes_steps: steps with frozen prototypes (paper: the
            first epoch; 200 is about one CIFAR-10 epoch at batch 256).
        queue_size: rows of each embedding queue (0: no queue).
        views: a `MultiCrop` (2 global crops first); defaults to
            `multi_crop_views`: 2 global crops and 4 local ones of half the
            side, SwAV's scales (paper: 6 local crops of 96 px for 224 px).
        **kwargs: `SSLModel` options (`input_shape`, `image_size`, `seed`, `head_initializer`, ...).

    Example:
        >>> encoder = keras_ssl.backbones.tiny_encoder((None, None, 3), width=8)
        >>> model = keras_ssl.SwAV(
        ...     encoder, input_shape=(16, 16, 3), num_prototypes=16, projection_dim=8, hidden_dim=16
        ... )
        >>> model.view_shapes   # 2 global crops, 4 local ones of half the side
        [(16, 16, 3), (16, 16, 3), (8, 8, 3), (8, 8, 3), (8, 8, 3), (8, 8, 3)]
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['loss', 'z_std']
    """

    default_head_initializer = "torch"  # PyTorch's `nn.Linear` default, the official code's
    local_views = True
    view_recipe = staticmethod(multi_crop_views)
    gathered_outputs = ("z1", "scores")
    local_outputs = ("z2",)
    monitored_output = "z1"

    def __init__(
        self,
        encoder,
        *,
        num_prototypes=512,
        projection_dim=128,
        hidden_dim=None,
        temperature=0.1,
        epsilon=0.05,
        sinkhorn_iterations=3,
        freeze_prototypes_steps=200,
        queue_size=0,
        **kwargs,
    ):
        for name, value in (("temperature", temperature), ("epsilon", epsilon)):
            if not value > 0:
                raise ValueError(f"`{name}` must be > 0, got {value}.")
        for name, value, low in (
            ("num_prototypes", num_prototypes, 1),
            ("sinkhorn_iterations", sinkhorn_iterations, 1),
            ("freeze_prototypes_steps", freeze_prototypes_steps, 0),
            ("queue_size", queue_size, 0),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}, got {value}.")
        super().__init__(encoder, **kwargs)
        self.num_prototypes, self.projection_dim = int(num_prototypes), int(projection_dim)
        self.hidden_dim = int(hidden_dim or min(2048, 4 * self.feature_dim))
        self.temperature, self.epsilon = float(temperature), float(epsilon)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.freeze_prototypes_steps, self.queue_size = int(freeze_prototypes_steps), int(queue_size)
        self.projector = ProjectionHead(self.hidden_dim, self.projection_dim, initializer=self.head_initializer)
        self.projector.build((None, self.feature_dim))
        self.prototypes = Prototypes(self.num_prototypes, self.freeze_prototypes_steps)
        self.prototypes.build((None, self.projection_dim))
        # One queue per assignment (global) crop, as in the reference code.
        self.queues = [
            MemoryBank(self.queue_size, self.projection_dim, seed=self.next_seed(), name=f"queue_{i}")
            for i in range(2 if self.queue_size else 0)
        ]

    def ssl_forward(self, views, training):
        # One projector call over all crops, so BatchNorm sees every crop.
        z = [losses.l2_normalize(zv) for zv in self.embed(views, self.projector, training, together=True)]
        return {"z1": z[0], "z2": z[1], "scores": [self.prototypes(zv, step=self.step) for zv in z]}

    def compute_ssl_loss(self, outputs):
        scores = outputs["scores"]
        options = dict(temperature=self.temperature, epsilon=self.epsilon, iterations=self.sinkhorn_iterations)
        loss = losses.swav(scores, (0, 1), **options)
        if self.queues:
            # A queue joins Sinkhorn only once full (random rows would bias the codes).
            kernel = ops.stop_gradient(self.prototypes.normalized_kernel())
            queue_scores = [ops.matmul(queue.read(), kernel) for queue in self.queues]
            queued = losses.swav(scores, (0, 1), queue_scores=queue_scores, **options)
            full = ops.logical_and(self.queues[0].is_full(), self.queues[1].is_full())
            loss = ops.where(full, queued, loss)
        return loss, {}

    def update_state(self, outputs):
        for queue, z in zip(self.queues, (outputs["z1"], outputs["z2"])):
            queue.enqueue(z)
