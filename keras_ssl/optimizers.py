"""Large-batch optimisation: LARS, warm-up + cosine schedule, learning-rate scaling."""

import math

import keras
from keras import ops

from keras_ssl import keras_compat


@keras.saving.register_keras_serializable(package="keras_ssl")
class LARS(keras.optimizers.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017).

    Each weight matrix's step is scaled by the trust ratio
    `trust_coefficient * ||w|| / ||g + weight_decay * w||`, so every layer
    moves by a similar fraction of its norm whatever the batch size. As in
    SimCLR, BYOL and Barlow Twins, biases and normalisation parameters (the
    variables of rank <= 1) are excluded from both the adaptation and the
    weight decay.

    Args:
        learning_rate: float or `LearningRateSchedule`.
        momentum: heavy-ball momentum in [0, 1).
        weight_decay: L2 penalty coupled into the gradient (not Keras's
            decoupled decay), as the reference LARS implementations do.
        trust_coefficient: the `eta` of the trust ratio.
        exclude_bias_and_norm: exclude rank <= 1 variables from adaptation
            and weight decay.
        nesterov: Nesterov momentum.
        name: optimizer name.
        **kwargs: other `keras.optimizers.Optimizer` options (`clipnorm`...).

    Example:
        >>> from keras_ssl.optimizers import LARS, WarmupCosine, scale_learning_rate
        >>> lr = WarmupCosine(scale_learning_rate(0.3, 512), total_steps=10000, warmup_steps=500)
        >>> model = keras_ssl.SimCLR(encoder, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=LARS(lr, weight_decay=1e-6))

        Each matrix moves by `trust_coefficient` times its norm, whatever
        the gradient's size; a vector (bias) takes the plain SGD step:

        >>> w, b = keras.Variable(np.ones((2, 2))), keras.Variable(np.ones(2))
        >>> optimizer = LARS(1.0, momentum=0.0, weight_decay=0.0)
        >>> _ = optimizer.apply_gradients([(100 * ops.ones((2, 2)), w), (0.1 * ops.ones(2), b)])
        >>> np.round(np.asarray(w, "float64"), 4).tolist(), np.round(np.asarray(b, "float64"), 4).tolist()
        ([[0.999, 0.999], [0.999, 0.999]], [0.9, 0.9])
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=1e-6,
        trust_coefficient=1e-3,
        exclude_bias_and_norm=True,
        nesterov=False,
        name="lars",
        **kwargs,
    ):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}.")
        if weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(
                f"Need weight_decay >= 0 and trust_coefficient > 0, got {weight_decay}, {trust_coefficient}."
            )
        self.momentum = float(momentum)
        self.lars_weight_decay = float(weight_decay)
        self.trust_coefficient = float(trust_coefficient)
        self.exclude_bias_and_norm = bool(exclude_bias_and_norm)
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def _adapted(self, variable):
        return not (self.exclude_bias_and_norm and len(variable.shape) <= 1)

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        if self._adapted(variable):
            w = ops.convert_to_tensor(variable)
            g = g + self.lars_weight_decay * w
            w_norm, g_norm = ops.norm(ops.reshape(w, (-1,))), ops.norm(ops.reshape(g, (-1,)))
            # A zero weight (fresh layer) or gradient keeps the plain step.
            ratio = ops.where((w_norm > 0) & (g_norm > 0), self.trust_coefficient * w_norm / g_norm, 1.0)
            g = g * ops.cast(ratio, variable.dtype)
        m = self.momentums[keras_compat.variable_index(self, variable)]
        self.assign(m, self.momentum * m + g)
        step = self.momentum * m + g if self.nesterov else m
        self.assign_sub(variable, lr * step)

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            weight_decay=self.lars_weight_decay,
            trust_coefficient=self.trust_coefficient,
            exclude_bias_and_norm=self.exclude_bias_and_norm,
            nesterov=self.nesterov,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ssl")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak`, then cosine decay to `final`.

    Args:
        peak: learning rate at the end of warm-up.
        total_steps: length of the whole schedule in optimizer steps.
        warmup_steps: steps of linear warm-up (10 epochs in SimCLR/BYOL).
        final: learning rate at `total_steps` (and after).

    Example:
        >>> schedule = keras_ssl.optimizers.WarmupCosine(1e-3, total_steps=1000, warmup_steps=100)
        >>> [round(float(schedule(step)), 6) for step in (0, 50, 100, 550, 1000)]
        [0.0, 0.0005, 0.001, 0.0005, 0.0]
        >>> optimizer = keras.optimizers.AdamW(schedule)
    """

    def __init__(self, peak, total_steps, warmup_steps=0, final=0.0):
        if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"Need total_steps > 0 and 0 <= warmup_steps <= total_steps, got {total_steps}, {warmup_steps}."
            )
        self.peak, self.final = float(peak), float(final)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm = self.peak * step / max(self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        cosine = self.final + 0.5 * (self.peak - self.final) * (1 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warm, cosine)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final": self.final,
        }


def scale_learning_rate(base, batch_size, rule="linear", base_batch_size=256):
    """The batch-size scaling rule: `base * batch / 256` (or its square root).

    SimCLR uses `0.3 * batch / 256` with LARS ("linear") and
    `0.075 * sqrt(batch)` for small batches ("sqrt", here relative to 256).

    Args:
        base: learning rate at `base_batch_size`.
        batch_size: the global batch size.
        rule: `"linear"` or `"sqrt"`.
        base_batch_size: the batch the base rate is quoted for.

    Example:
        >>> keras_ssl.optimizers.scale_learning_rate(0.3, 1024)
        1.2
        >>> keras_ssl.optimizers.scale_learning_rate(0.3, 1024, rule="sqrt")
        0.6
    """
    if batch_size <= 0 or base_batch_size <= 0:
        raise ValueError(f"Batch sizes must be positive, got {batch_size}, {base_batch_size}.")
    ratio = batch_size / base_batch_size
    if rule == "linear":
        return base * ratio
    if rule == "sqrt":
        return base * math.sqrt(ratio)
    raise ValueError(f"`rule` must be 'linear' or 'sqrt', got {rule!r}.")
