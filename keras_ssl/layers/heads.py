"""Projection and prediction heads (MLPs on top of the encoder), DINO's and MSN's heads, and the zero-shot head."""

import keras
import numpy as np
from keras import ops

from keras_ssl import initializers, losses
from keras_ssl.layers.normalization import BatchNormalization

# The official heads' trunc_normal_(std=0.02) (MSN).


def _batch_norm(**kwargs):
    # PyTorch's BatchNorm1d defaults, as every paper's code: eps 1e-5 and
    # running statistics updated with 0.1 of the batch (Keras: momentum 0.9).
    return BatchNormalization(epsilon=1e-5, momentum=0.9, **kwargs)


@keras.saving.register_keras_serializable(package="keras_ssl")
class ProjectionHead(keras.layers.Layer):
    """MLP projector: `num_layers` Dense layers, BN + ReLU between them.

    SimCLR v1 uses 2 layers, SimCLR v2, Barlow Twins and VICReg 3, BYOL 2
    (its hidden width 4096 in the paper). The hidden layers have no bias
    when followed by BatchNorm (the bias would be cancelled). BatchNorm uses
    PyTorch's settings, as the papers' code: epsilon 1e-5 and momentum 0.1
    in PyTorch's terms (0.9 in Keras's).

    Args:
        hidden_dim: width of the hidden layers.
        output_dim: output width.
        num_layers: number of Dense layers (>= 1).
        batch_norm: BatchNorm after each hidden Dense.
        output_batch_norm: BatchNorm (without scale and centre) on the output,
            as the projectors of SimCLR, SimSiam, NNCLR and MoCo v3 use.
        output_bias: bias of the last Dense; defaults to
            `not output_batch_norm` (MoCo v3's predictor has none).
        initializer: the Dense layers' initialisation: "torch" (PyTorch's
            `nn.Linear` default, kernel and bias `U(+-1/sqrt(fan_in))`: the
            papers' PyTorch code), "keras" (Glorot-uniform kernels, zero
            biases), "simclr", "haiku", or a Keras initialiser for the
            kernels (`keras_ssl.initializers`).

    Example:
        >>> head = keras_ssl.layers.ProjectionHead(hidden_dim=16, output_dim=8)
        >>> h = encoder(images)   # (B, 32)
        >>> z = head(h, training=True)
        >>> tuple(z.shape)
        (8, 8)
    """

    def __init__(
        self,
        hidden_dim=2048,
        output_dim=128,
        num_layers=2,
        batch_norm=True,
        output_batch_norm=False,
        output_bias=None,
        initializer="torch",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.initializer = initializers.check(initializer)
        if num_layers < 1:
            raise ValueError(f"`num_layers` must be >= 1, got {num_layers}.")
        self.hidden_dim, self.output_dim = int(hidden_dim), int(output_dim)
        self.num_layers, self.batch_norm = int(num_layers), bool(batch_norm)
        self.output_batch_norm = bool(output_batch_norm)
        self.output_bias = not output_batch_norm if output_bias is None else bool(output_bias)
        self.blocks = []
        for _ in range(num_layers - 1):
            kernel = initializers.kernel(initializer, "dense")
            self.blocks.append(keras.layers.Dense(self.hidden_dim, use_bias=not batch_norm, kernel_initializer=kernel))
            if batch_norm:
                self.blocks.append(_batch_norm())
            self.blocks.append(keras.layers.ReLU())
        kernel = initializers.kernel(initializer, "dense")
        self.blocks.append(keras.layers.Dense(self.output_dim, use_bias=self.output_bias, kernel_initializer=kernel))
        if output_batch_norm:
            self.blocks.append(_batch_norm(center=False, scale=False))

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.blocks:
            # A PyTorch-like bias depends on the fan-in, known only now.
            if isinstance(layer, keras.layers.Dense) and (bias := initializers.bias(self.initializer, shape[-1])):
                layer.bias_initializer = bias
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
            initializer=initializers.serialize(self.initializer),
            hidden_dim=self.hidden_dim,
            output_dim=self.output_dim,
            num_layers=self.num_layers,
            batch_norm=self.batch_norm,
            output_batch_norm=self.output_batch_norm,
            output_bias=self.output_bias,
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
        >>> z = keras.random.normal((8, 8), seed=0)
        >>> p = keras_ssl.layers.PredictionHead(hidden_dim=16, output_dim=8)(z)
        >>> tuple(p.shape)
        (8, 8)
    """

    def __init__(self, hidden_dim=512, output_dim=128, num_layers=2, **kwargs):
        super().__init__(hidden_dim, output_dim, num_layers, **kwargs)


def _unit_columns(kernel):
    # Float32 like the losses; the norm floor keeps a zero column finite.
    kernel = keras.ops.cast(kernel, "float32")
    norm_sq = keras.ops.sum(keras.ops.square(kernel), axis=0, keepdims=True)
    return kernel * keras.ops.rsqrt(keras.ops.maximum(norm_sq, 1e-12))


@keras.saving.register_keras_serializable(package="keras_ssl")
class Prototypes(keras.layers.Layer):
    """SwAV's prototypes: a bias-free Dense whose kernel columns are unit vectors.

    The columns are L2-normalised in the forward pass (so the stored kernel
    may drift in norm, the scores are always cosines for unit inputs, and
    the gradient reaching the kernel is the part tangent to each column).
    For the first `freeze_steps` optimizer steps the prototypes get no
    gradient (SwAV freezes them for the first epoch): the normalised kernel
    passes through `stop_gradient` while `step < freeze_steps`, chosen with
    `ops.where` on the step variable so it compiles.

    Args:
        num_prototypes: number of prototypes `K`.
        freeze_steps: steps without prototype updates (>= 0).

    Example:
        >>> protos = keras_ssl.layers.Prototypes(10, freeze_steps=200)
        >>> z = keras.random.normal((8, 4), seed=0)
        >>> step = keras.Variable(0, dtype="int32", trainable=False)   # the optimizer's step
        >>> scores = protos(keras_ssl.losses.l2_normalize(z), step=step)   # cosines, (B, 10)
        >>> tuple(scores.shape), bool(ops.all(ops.abs(scores) <= 1 + 1e-6))
        ((8, 10), True)
    """

    def __init__(self, num_prototypes, freeze_steps=0, **kwargs):
        super().__init__(**kwargs)
        if int(num_prototypes) < 1:
            raise ValueError(f"`num_prototypes` must be >= 1, got {num_prototypes}.")
        if int(freeze_steps) < 0:
            raise ValueError(f"`freeze_steps` must be >= 0, got {freeze_steps}.")
        self.num_prototypes, self.freeze_steps = int(num_prototypes), int(freeze_steps)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], self.num_prototypes),
            initializer="glorot_uniform",
        )

    def normalized_kernel(self):
        """The `(D, K)` kernel with unit columns (float32)."""
        return _unit_columns(self.kernel)

    def call(self, x, step=None):
        kernel = self.normalized_kernel()
        if step is not None and self.freeze_steps > 0:
            frozen = keras.ops.convert_to_tensor(step) < self.freeze_steps
            kernel = keras.ops.where(frozen, keras.ops.stop_gradient(kernel), kernel)
        return keras.ops.matmul(keras.ops.cast(x, "float32"), kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_prototypes)

    def get_config(self):
        config = super().get_config()
        config.update(num_prototypes=self.num_prototypes, freeze_steps=self.freeze_steps)
        return config


@keras.saving.register_keras_serializable(package="keras_ssl")
class DINOHead(keras.layers.Layer):
    """DINO's head: GELU MLP -> L2 normalise -> weight-normalised Dense.

    `num_layers` Dense layers (GELU between them) map features to a
    `bottleneck_dim` vector, which is L2-normalised; the last layer has no
    bias and a weight-normalised kernel `g * v / ||v||` (per output column).
    With `norm_last_layer=True` the scale `g` is fixed to 1 (not trainable),
    as in the paper's default, which stabilises training.

    Args:
        output_dim: number of output logits `K` (paper: 65536).
        hidden_dim: MLP width (paper: 2048).
        bottleneck_dim: width before the last layer (paper: 256).
        num_layers: Dense layers of the MLP (>= 1).
        norm_last_layer: fix the weight-norm scale `g` to 1.
        freeze_last_layer_steps: while the `step` passed to `call` is below
            it, the last layer gets no gradient (DINO's `freeze_last_layer`).
        use_bn: BatchNorm between each hidden Dense and its GELU (DINO's
            `use_bn_in_head`, off in the paper; lightly's CIFAR-10 recipe turns it on).

    Example:
        >>> head = keras_ssl.layers.DINOHead(64, hidden_dim=16, bottleneck_dim=8)
        >>> h = encoder(images)
        >>> logits = head(h)
        >>> tuple(logits.shape)   # (B, 64)
        (8, 64)
        >>> [w.name for w in head.weights if not w.trainable]   # norm_last_layer: g fixed to 1
        ['last_g']
    """

    def __init__(
        self,
        output_dim=65536,
        hidden_dim=2048,
        bottleneck_dim=256,
        num_layers=3,
        norm_last_layer=True,
        freeze_last_layer_steps=0,
        use_bn=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_layers) < 1:
            raise ValueError(f"`num_layers` must be >= 1, got {num_layers}.")
        for name, value in (("output_dim", output_dim), ("hidden_dim", hidden_dim), ("bottleneck_dim", bottleneck_dim)):
            if int(value) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}.")
        self.output_dim, self.hidden_dim = int(output_dim), int(hidden_dim)
        self.bottleneck_dim, self.num_layers = int(bottleneck_dim), int(num_layers)
        self.norm_last_layer = bool(norm_last_layer)
        self.freeze_last_layer_steps, self.use_bn = int(freeze_last_layer_steps), bool(use_bn)
        widths, act = [self.hidden_dim] * (self.num_layers - 1) + [self.bottleneck_dim], None if use_bn else "gelu"
        self.mlp = [
            keras.layers.Dense(
                w, activation=act if i < len(widths) - 1 else None, kernel_initializer=initializers.trunc_normal()
            )
            for i, w in enumerate(widths)
        ]
        # Separate from `mlp`, so that the weights of a head without BatchNorm keep their paths.
        self.norms = [_batch_norm() for _ in range(self.num_layers - 1)] if self.use_bn else []

    def build(self, input_shape):
        shape = tuple(input_shape)
        for i, layer in enumerate(self.mlp):
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
            if i < len(self.norms):
                self.norms[i].build(shape)
        self.last_v = self.add_weight(
            name="last_v",
            shape=(self.bottleneck_dim, self.output_dim),
            initializer=initializers.torch_default(),  # the official last layer keeps nn.Linear's init
        )
        self.last_g = self.add_weight(
            name="last_g",
            shape=(self.output_dim,),
            initializer="ones",
            trainable=not self.norm_last_layer,
        )

    def call(self, x, training=False, step=None):
        for i, layer in enumerate(self.mlp):
            x = layer(x, training=training)
            if i < len(self.norms):
                x = keras.activations.gelu(self.norms[i](x, training=training), approximate=False)
        x = keras.ops.cast(x, "float32")
        norm_sq = keras.ops.sum(keras.ops.square(x), axis=-1, keepdims=True)
        x = x * keras.ops.rsqrt(keras.ops.maximum(norm_sq, 1e-12))
        weight = _unit_columns(self.last_v) * keras.ops.cast(self.last_g, "float32")
        if step is not None and self.freeze_last_layer_steps > 0:
            # No gradient reaches the last layer while frozen; chosen with
            # `where` on the step variable so it compiles with the step.
            frozen = keras.ops.convert_to_tensor(step) < self.freeze_last_layer_steps
            weight = keras.ops.where(frozen, keras.ops.stop_gradient(weight), weight)
        return keras.ops.matmul(x, weight)

    def like(self, output_dim):
        """A new head with this one's settings and `output_dim` outputs (iBOT's separate patch head).

        Example:
            >>> head = keras_ssl.layers.DINOHead(64, hidden_dim=16, bottleneck_dim=8, freeze_last_layer_steps=5)
            >>> patch_head = head.like(32)
            >>> patch_head.output_dim, patch_head.hidden_dim, patch_head.freeze_last_layer_steps
            (32, 16, 5)
        """
        config = {**self.get_config(), "output_dim": output_dim}
        config.pop("name")  # a name of its own
        return type(self).from_config(config)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            hidden_dim=self.hidden_dim,
            bottleneck_dim=self.bottleneck_dim,
            num_layers=self.num_layers,
            norm_last_layer=self.norm_last_layer,
            freeze_last_layer_steps=self.freeze_last_layer_steps,
            use_bn=self.use_bn,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ssl")
class MSNHead(keras.layers.Layer):
    """MSN's projection head: Dense-BN-GELU, Dense-BN-GELU, Dense (biases everywhere, as the official).

    Args:
        hidden_dim: width of the two hidden layers (MSN: 2048).
        output_dim: output width (MSN: 256).

    Example:
        >>> tuple(keras_ssl.layers.MSNHead(16, 8)(encoder(images), training=True).shape)
        (8, 8)
    """

    def __init__(self, hidden_dim=2048, output_dim=256, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.output_dim = int(hidden_dim), int(output_dim)
        self.blocks = []
        for _ in range(2):
            self.blocks += [
                keras.layers.Dense(self.hidden_dim, kernel_initializer=initializers.trunc_normal()),
                _batch_norm(),
                keras.layers.Activation("gelu"),
            ]
        self.blocks.append(keras.layers.Dense(self.output_dim, kernel_initializer=initializers.trunc_normal()))

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
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "output_dim": self.output_dim}


@keras.saving.register_keras_serializable(package="keras_ssl")
class ZeroShotHead(keras.layers.Layer):
    """Softmax over `scale * cosine(x, class_embeddings)`.

    Args:
        class_embeddings: `(C, D)` unit-norm class embeddings.
        scale: logit scale.

    Example:
        >>> head = keras_ssl.layers.ZeroShotHead(np.eye(3, 8), 100.0)
        >>> probs = head(np.array([[0.0, 1.0, 0, 0, 0, 0, 0, 0], [0.6, 0, 0.8, 0, 0, 0, 0, 0]], "float32"))
        >>> tuple(probs.shape), ops.convert_to_numpy(ops.argmax(probs, axis=-1)).tolist()
        ((2, 3), [1, 2])
    """

    def __init__(self, class_embeddings, scale, **kwargs):
        super().__init__(**kwargs)
        self.class_embeddings = np.asarray(class_embeddings, "float32")
        self.scale = float(scale)

    def call(self, x):
        logits = self.scale * ops.matmul(losses.l2_normalize(x), ops.transpose(self.class_embeddings))
        return ops.softmax(logits, axis=-1)

    def get_config(self):
        return {**super().get_config(), "class_embeddings": self.class_embeddings.tolist(), "scale": self.scale}
