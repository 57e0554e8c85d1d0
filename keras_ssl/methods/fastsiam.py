"""FastSiam (Pototzky et al. 2022, "FastSiam: Resource-Efficient Self-supervised Learning on a Single GPU")."""

import keras
from keras import ops

from keras_ssl.methods.simsiam import SimSiam
from keras_ssl.views.recipes import fastsiam_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class FastSiam(SimSiam):
    """FastSiam: SimSiam whose target is the mean of the other views' projections.

    Each image gives `K` views (the encoder runs on each alone, as SimSiam's), projected
    to `z_1..z_K` and predicted to `p_1..p_K` by SimSiam's heads. View `k`'s
    target is the mean of the other `K - 1` projections, without gradient,
    a steadier target than SimSiam's single view; the loss is
    `1/K sum_k D(p_k, sg(mean_{j != k} z_j))` with `D` the negative cosine.
    With `K = 2` it is SimSiam's loss.

    Args:
        encoder: backbone mapping images in [0, 1] to `(B, D)` features.
        num_views: views per image `K` (>= 2; paper: 4).
        projection_dim, prediction_dim, stop_gradient: as `SimSiam`.
        views: a `ManyViews` of `num_views` views; defaults to
            `fastsiam_views` (SimSiam's augmentations).
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, `head_initializer`, ...).

    Example:
        >>> from keras_ssl.methods.fastsiam import FastSiam
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = FastSiam(encoder, projection_dim=16)
        >>> model.num_views, model.views.num_global
        (4, 4)
        >>> model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['loss', 'z_std']
    """

    view_recipe = staticmethod(fastsiam_views)
    global_views = 4
    gathered_outputs = ("z", "p", "z1")
    monitored_output = "z1"

    def __init__(self, encoder, *, num_views=4, projection_dim=None, prediction_dim=None, stop_gradient=True, **kwargs):
        if int(num_views) != num_views or num_views < 2:
            raise ValueError(f"`num_views` must be an integer >= 2, got {num_views}.")
        # The engine checks the views against `global_views`, and its default views follow it.
        self.num_views = self.global_views = int(num_views)
        super().__init__(
            encoder, projection_dim=projection_dim, prediction_dim=prediction_dim, stop_gradient=stop_gradient, **kwargs
        )

    def ssl_forward(self, views, training):
        z = self.embed(views, self.projector, training)
        p = [self.predictor(z_k, training=training) for z_k in z]
        return {"z": z, "p": p, "z1": z[0]}

    def compute_ssl_loss(self, outputs):
        z, p = outputs["z"], outputs["p"]
        loss = 0.0
        for k in range(len(z)):
            target = ops.mean(ops.stack([z_j for j, z_j in enumerate(z) if j != k]), axis=0)
            loss = loss + self.distance(p[k], target)
        return loss / len(z), {}
