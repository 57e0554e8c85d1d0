"""Iterative normalisation (Huang et al. 2019): group whitening by Newton's iterations."""

import keras
from keras import ops


def iternorm_groups(features, num_groups=64, num_channels=None):
    """`(groups, channels per group)` as the official IterNorm resolves them.

    `channels = ceil(features / num_groups)` unless given, halved until it
    divides `features`; then `groups = features // channels`.

    Args:
        features: the input width.
        num_groups: the groups asked for.
        num_channels: channels per group (overrides `num_groups`).

    Example:
        >>> from keras_ssl.layers.iternorm import iternorm_groups
        >>> iternorm_groups(2048), iternorm_groups(16), iternorm_groups(24, num_groups=5)
        ((64, 32), (16, 1), (12, 2))
    """
    features = int(features)
    if features < 1 or int(num_groups) < 1:
        raise ValueError(f"IterNorm needs features >= 1 and num_groups >= 1, got {features}, {num_groups}.")
    channels = int(num_channels) if num_channels is not None else (features - 1) // int(num_groups) + 1
    while channels > 1 and features % channels:
        channels //= 2
    return features // channels, channels


@keras.saving.register_keras_serializable(package="keras_ssl")
class IterNorm(keras.layers.Layer):
    """Whitens groups of features with the batch's covariance (IterNorm).

    The features are split into `G` groups of `C` consecutive channels. In
    training each group is centred with the batch mean and multiplied by an
    approximation of `Sigma^(-1/2)`, `Sigma = xc xc^T / B + epsilon I` its
    (biased) covariance: `iterations` Newton steps `P <- 1.5 P - 0.5 P^3
    Sigma_N` on `Sigma_N = Sigma / tr(Sigma)` from `P = I`, then `P /
    sqrt(tr(Sigma))`. The gradient flows through the iterations. Moving
    averages of the mean and of the whitening matrix (weight `momentum` on the
    old value, as Keras's BatchNormalization) serve inference. A per-feature
    scale and offset follow. VIbCReg ends its projector with this layer.

    Args:
        num_groups: groups asked for (official: 64); the official rule
            (`iternorm_groups`) makes the group size divide the width.
        num_channels: channels per group instead of `num_groups`.
        iterations: Newton iterations `T` (official: 5); a few tens diverge in
            finite precision, in the official code too (the iteration does
            not correct its rounding errors).
        epsilon: added to the covariance's diagonal (1e-5).
        momentum: weight of the old moving statistics (0.9: PyTorch's 0.1).
        affine: learn a scale (ones) and an offset (zeros) per feature.
        **kwargs: `keras.layers.Layer` options.

    Example:
        >>> from keras_ssl.layers.iternorm import IterNorm
        >>> x = keras.random.normal((64, 8), seed=0) @ keras.random.normal((8, 8), seed=1)
        >>> layer = IterNorm(num_groups=2, iterations=10)
        >>> y = ops.convert_to_numpy(layer(x, training=True))
        >>> cov = np.cov(y[:, :4].T, bias=True)   # one group: about the identity
        >>> bool(np.abs(cov - np.eye(4)).max() < 0.05), (layer.num_groups, layer.group_size)
        (True, (2, 4))
    """

    def __init__(
        self, num_groups=64, num_channels=None, iterations=5, epsilon=1e-5, momentum=0.9, affine=True, **kwargs
    ):
        super().__init__(**kwargs)
        if int(iterations) < 0 or not epsilon >= 0 or not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"IterNorm needs iterations >= 0, epsilon >= 0 and momentum in [0, 1], "
                f"got {iterations}, {epsilon}, {momentum}."
            )
        self.requested_groups = int(num_groups)
        self.num_channels = None if num_channels is None else int(num_channels)
        self.iterations, self.epsilon, self.momentum = int(iterations), float(epsilon), float(momentum)
        self.affine = bool(affine)

    def build(self, input_shape):
        features = int(input_shape[-1])
        self.num_groups, self.group_size = iternorm_groups(features, self.requested_groups, self.num_channels)
        g, c = self.num_groups, self.group_size
        if self.affine:
            self.gamma = self.add_weight(name="gamma", shape=(features,), initializer="ones")
            self.beta = self.add_weight(name="beta", shape=(features,), initializer="zeros")
        self.moving_mean = self.add_weight(name="moving_mean", shape=(g, c, 1), initializer="zeros", trainable=False)
        self.moving_whitening = self.add_weight(
            name="moving_whitening",
            shape=(g, c, c),
            initializer=lambda shape, dtype=None: ops.tile(ops.eye(c, dtype=dtype)[None], (g, 1, 1)),
            trainable=False,
        )

    def whitening(self, xc):
        """`Sigma^(-1/2)` of each group of centred `(G, C, B)` columns, by Newton's iterations."""
        c = self.group_size
        eye = ops.eye(c, dtype="float32")
        sigma = ops.matmul(xc, ops.transpose(xc, (0, 2, 1))) / ops.cast(ops.shape(xc)[-1], "float32")
        sigma = sigma + self.epsilon * eye
        inverse_trace = 1.0 / ops.sum(sigma * eye, axis=(1, 2), keepdims=True)
        sigma_n = sigma * inverse_trace
        p = ops.broadcast_to(eye, ops.shape(sigma))
        for _ in range(self.iterations):
            p = 1.5 * p - 0.5 * ops.matmul(ops.matmul(ops.matmul(p, p), p), sigma_n)
        return p * ops.sqrt(inverse_trace)

    def call(self, inputs, training=False):
        x = ops.cast(inputs, "float32")
        # Feature f is channel f % C of group f // C, as the official (G, C, B) view.
        x = ops.transpose(ops.reshape(x, (-1, self.num_groups, self.group_size)), (1, 2, 0))
        if training and self.trainable:
            mean = ops.mean(x, axis=-1, keepdims=True)
            xc = x - mean
            wm = self.whitening(xc)
            m = self.momentum
            self.moving_mean.assign(m * ops.convert_to_tensor(self.moving_mean) + (1.0 - m) * ops.stop_gradient(mean))
            self.moving_whitening.assign(
                m * ops.convert_to_tensor(self.moving_whitening) + (1.0 - m) * ops.stop_gradient(wm)
            )
        else:
            xc = x - ops.convert_to_tensor(self.moving_mean)
            wm = ops.convert_to_tensor(self.moving_whitening)
        y = ops.reshape(ops.transpose(ops.matmul(wm, xc), (2, 0, 1)), (-1, self.num_groups * self.group_size))
        if self.affine:
            y = y * self.gamma + self.beta
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_groups=self.requested_groups,
            num_channels=self.num_channels,
            iterations=self.iterations,
            epsilon=self.epsilon,
            momentum=self.momentum,
            affine=self.affine,
        )
        return config
