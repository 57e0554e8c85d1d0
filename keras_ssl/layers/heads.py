"""Projection and prediction heads (MLPs on top of the encoder)."""

import keras


@keras.saving.register_keras_serializable(package="keras_ssl")
class ProjectionHead(keras.layers.Layer):
    """MLP projector: `num_layers` Dense layers, BN + ReLU between them.

    SimCLR v1 uses 2 layers, SimCLR v2, Barlow Twins and VICReg 3, BYOL 2
    (its hidden width 4096 in the paper). The hidden layers have no bias
    when followed by BatchNorm (the bias would be cancelled).

    Args:
        hidden_dim: width of the hidden layers.
        output_dim: output width.
        num_layers: number of Dense layers (>= 1).
        batch_norm: BatchNorm after each hidden Dense.
        output_batch_norm: BatchNorm (without scale and centre) on the output,
            as SimSiam's projector and MoCo v3 use.

    Example:
        >>> head = ProjectionHead(hidden_dim=512, output_dim=128)
        >>> z = head(h)   # (B, 128)
    """

    def __init__(
        self,
        hidden_dim=2048,
        output_dim=128,
        num_layers=2,
        batch_norm=True,
        output_batch_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_layers < 1:
            raise ValueError(f"`num_layers` must be >= 1, got {num_layers}.")
        self.hidden_dim, self.output_dim = int(hidden_dim), int(output_dim)
        self.num_layers, self.batch_norm = int(num_layers), bool(batch_norm)
        self.output_batch_norm = bool(output_batch_norm)
        self.blocks = []
        for _ in range(num_layers - 1):
            self.blocks.append(keras.layers.Dense(self.hidden_dim, use_bias=not batch_norm))
            if batch_norm:
                self.blocks.append(keras.layers.BatchNormalization())
            self.blocks.append(keras.layers.ReLU())
        self.blocks.append(keras.layers.Dense(self.output_dim, use_bias=not output_batch_norm))
        if output_batch_norm:
            self.blocks.append(keras.layers.BatchNormalization(center=False, scale=False))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.blocks:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(self, x, training=False):
        for layer in self.blocks:
            x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            output_dim=self.output_dim,
            num_layers=self.num_layers,
            batch_norm=self.batch_norm,
            output_batch_norm=self.output_batch_norm,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ssl")
class PredictionHead(ProjectionHead):
    """Predictor MLP (BYOL, SimSiam, MoCo v3): Dense-BN-ReLU-Dense.

    Args:
        hidden_dim: bottleneck width (SimSiam: a quarter of `output_dim`).
        output_dim: output width, equal to the projector's.
        **kwargs: see `ProjectionHead`.

    Example:
        >>> p = PredictionHead(hidden_dim=64, output_dim=128)(z)
    """

    def __init__(self, hidden_dim=512, output_dim=128, num_layers=2, **kwargs):
        super().__init__(hidden_dim, output_dim, num_layers, **kwargs)
