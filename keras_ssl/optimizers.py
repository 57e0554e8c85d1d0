"""The papers' optimisers: SGD, Adam and LARS with PyTorch's weight decay, and the lr scaling rule.

Keras's optimizers decay weights decoupled (`w -= lr * wd * w`, after the
step, in `keras.optimizers.SGD` too); `torch.optim.SGD` and `Adam`, and every
paper's recipe quoted in their terms, add `wd * w` to the gradient before
momentum, which with momentum 0.9 decays about 10x more. Every
`weight_decay` in this module has PyTorch's (the papers') meaning, and is a
float or a schedule of the step (`keras_ssl.schedules.CosineWeightDecay`:
DINO's 0.04 -> 0.4), read at every step as the official code's
`param_group["weight_decay"] = wd_schedule[it]`.

Each also takes `lr_multipliers={path: factor}`: the variables at that
path, or under it (`"block_3"`), learn at `factor` times the rate (the
longest matching path wins), as the official codes' parameter groups
(`param_group["lr"] = lr * lr_multiplier`; AdamW's decay scales with it
too). DINOv2's layer-wise rate decay is such a map
(`keras_ssl.backbones.ViT.layer_decay_multipliers`).
"""

import math

import keras
from keras import ops

from keras_ssl import keras_compat, schedules

# Re-exported: `keras_ssl.optimizers.WarmupCosine` is where it lived first.
from keras_ssl.schedules import WarmupCosine  # noqa: F401


def _decayed(variable, exclude_bias_and_norm):
    """The papers' rule: biases and norm scales/offsets (rank <= 1) get no decay (nor LARS adaptation).

    The rule of BYOL's, Barlow Twins', VICReg's and solo-learn's LARS
    (`p.ndim == 1`), of DINO's and MAE's parameter groups (`ndim == 1` or a
    `.bias`) and of SimCLR's names (`bias`, `batch_normalization`).
    """
    return not (exclude_bias_and_norm and len(variable.shape) <= 1)


class _PaperOptimizer(keras.optimizers.Optimizer):
    """What the papers' optimisers share: a rate multiplier per variable (the official codes' parameter groups)."""

    def __init__(self, learning_rate, name, lr_multipliers=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        multipliers = dict(lr_multipliers or {})
        bad = {k: v for k, v in multipliers.items() if not (isinstance(k, str) and v >= 0)}
        if bad:
            raise ValueError(f"`lr_multipliers` maps variable paths to rates >= 0; got {bad}.")
        self.lr_multipliers = {k: float(v) for k, v in multipliers.items()}
        self._factors = []

    def build(self, variables):
        if not self.built:
            # Each variable takes the factor of the longest key that is its path or a folder of it.
            matches = [[k for k in self.lr_multipliers if v.path == k or v.path.startswith(k + "/")] for v in variables]
            self._factors = [self.lr_multipliers[max(m, key=len)] if m else 1.0 for m in matches]
            unused = sorted(set(self.lr_multipliers) - {k for m in matches for k in m})
            if unused:  # a misspelt key would otherwise leave its variables at the full rate
                paths = ", ".join(v.path for v in variables[:6])
                raise ValueError(
                    f"`lr_multipliers` names {unused}: no variable's path nor a folder of one ({paths}...)."
                )
        super().build(variables)

    def _rate(self, learning_rate, variable):
        """This variable's rate: the step's times its factor (AdamW's decay takes it too, as torch's does)."""
        lr = ops.cast(learning_rate, variable.dtype)
        if not self.lr_multipliers:
            return lr
        factor = self._factors[keras_compat.variable_index(self, variable)]
        return lr if factor == 1.0 else lr * factor

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers) or None}


@keras.saving.register_keras_serializable(package="keras_ssl")
class LARS(_PaperOptimizer):
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
            decoupled decay), as the reference LARS implementations do: a
            float or a schedule of the step (`keras_ssl.schedules`).
        trust_coefficient: the `eta` of the trust ratio.
        exclude_bias_and_norm: exclude rank <= 1 variables from adaptation
            and weight decay.
        nesterov: Nesterov momentum.
        clip: LARC's clipping (solo-learn's `clip_lr`): a layer's rate is
            `min(trust ratio, learning rate)` instead of their product.
        name: optimizer name.
        **kwargs: `lr_multipliers` (above) and `keras.optimizers.Optimizer`'s
            options (`clipnorm`...).

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
        clip=False,
        name="lars",
        **kwargs,
    ):
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0 <= momentum < 1:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}.")
        if trust_coefficient <= 0:
            raise ValueError(f"Need trust_coefficient > 0, got {trust_coefficient}.")
        self.momentum = float(momentum)
        self.lars_weight_decay = schedules.weight_decay(weight_decay)
        self.trust_coefficient = float(trust_coefficient)
        self.exclude_bias_and_norm = bool(exclude_bias_and_norm)
        self.nesterov = bool(nesterov)
        self.clip = bool(clip)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def _adapted(self, variable):
        return _decayed(variable, self.exclude_bias_and_norm)

    def update_step(self, gradient, variable, learning_rate):
        lr = self._rate(learning_rate, variable)
        g = ops.cast(gradient, variable.dtype)
        if self._adapted(variable):
            w = ops.convert_to_tensor(variable)
            g = g + schedules.weight_decay_at(self.lars_weight_decay, self.iterations, variable.dtype) * w
            w_norm, g_norm = ops.norm(ops.reshape(w, (-1,))), ops.norm(ops.reshape(g, (-1,)))
            # A zero weight (fresh layer) or gradient keeps the plain step.
            ratio = ops.where((w_norm > 0) & (g_norm > 0), self.trust_coefficient * w_norm / g_norm, 1.0)
            if self.clip:  # at lr 0 (warm-up's first step) the ratio is 1: the step is 0 anyway
                ratio = ops.minimum(ratio / ops.maximum(lr, 1e-12), 1.0)
            g = g * ops.cast(ratio, variable.dtype)
        m = self.momentums[keras_compat.variable_index(self, variable)]
        self.assign(m, self.momentum * m + g)
        step = self.momentum * m + g if self.nesterov else m
        self.assign_sub(variable, lr * step)

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            weight_decay=schedules.serialize_weight_decay(self.lars_weight_decay),
            trust_coefficient=self.trust_coefficient,
            exclude_bias_and_norm=self.exclude_bias_and_norm,
            nesterov=self.nesterov,
            clip=self.clip,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ssl")
class SGD(_PaperOptimizer):
    """`torch.optim.SGD` (dampening 0): the papers' SGD, weight decay coupled into the gradient.

    Each step is `g = grad + weight_decay * w`, `m = momentum * m + g`,
    `w -= lr * m` (Nesterov: `w -= lr * (g + momentum * m)`), as PyTorch
    does. `keras.optimizers.SGD` differs twice: its `weight_decay` is
    decoupled (`w -= lr * weight_decay * w`, not passed through the
    momentum: about 10x weaker at momentum 0.9), and it keeps `lr` inside
    the momentum, so a changing learning rate acts on past steps too. A
    paper's `SGD(lr, momentum=0.9, weight_decay=5e-4)` is this class.

    Args:
        learning_rate: float or `LearningRateSchedule`.
        momentum: heavy-ball momentum in [0, 1).
        weight_decay: L2 penalty coupled into the gradient (PyTorch's): a
            float or a schedule of the step (`keras_ssl.schedules`).
        nesterov: Nesterov momentum (needs `momentum > 0`).
        exclude_bias_and_norm: no decay for rank <= 1 variables (biases,
            BatchNorm/LayerNorm scales and offsets), as most papers' code;
            `False` decays every variable, as `torch.optim.SGD(model.parameters())`.
        name: optimizer name.
        **kwargs: `lr_multipliers` (above) and `keras.optimizers.Optimizer`'s
            options (`clipnorm`...).

    Example:
        >>> from keras_ssl.optimizers import SGD
        >>> model = keras_ssl.SimSiam(encoder, projection_dim=8)
        >>> model.compile(optimizer=SGD(0.06, momentum=0.9, weight_decay=5e-4))

        With a zero gradient the kernel still decays, the bias does not:

        >>> w, b = keras.Variable(np.ones((2, 2))), keras.Variable(np.ones(2))
        >>> optimizer = SGD(0.5, momentum=0.0, weight_decay=0.1)
        >>> _ = optimizer.apply_gradients([(ops.zeros((2, 2)), w), (ops.zeros(2), b)])
        >>> np.round(np.asarray(w, "float64"), 4).tolist(), np.asarray(b, "float64").tolist()
        ([[0.95, 0.95], [0.95, 0.95]], [1.0, 1.0])
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        weight_decay=0.0,
        nesterov=False,
        exclude_bias_and_norm=True,
        name="sgd",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0 <= momentum < 1:
            raise ValueError(f"Need 0 <= momentum < 1, got {momentum}.")
        if nesterov and momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0 (as torch.optim.SGD).")
        self.momentum = float(momentum)
        # Keras's own `weight_decay` attribute stays None: its decoupled decay would act as well.
        self.coupled_weight_decay = schedules.weight_decay(weight_decay)
        self.nesterov = bool(nesterov)
        self.exclude_bias_and_norm = bool(exclude_bias_and_norm)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum") if self.momentum else []

    def update_step(self, gradient, variable, learning_rate):
        lr = self._rate(learning_rate, variable)
        g = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay and _decayed(variable, self.exclude_bias_and_norm):
            decay = schedules.weight_decay_at(self.coupled_weight_decay, self.iterations, variable.dtype)
            g = g + decay * ops.convert_to_tensor(variable)
        if self.momentum:
            m = self.momentums[keras_compat.variable_index(self, variable)]
            # A zero buffer's first step is PyTorch's `buf = g` exactly (dampening 0).
            buffer = self.momentum * m + g
            self.assign(m, buffer)
            g = g + self.momentum * buffer if self.nesterov else buffer
        self.assign_sub(variable, lr * g)

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            weight_decay=schedules.serialize_weight_decay(self.coupled_weight_decay),
            nesterov=self.nesterov,
            exclude_bias_and_norm=self.exclude_bias_and_norm,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ssl")
class Adam(_PaperOptimizer):
    """`torch.optim.Adam` / `AdamW`: PyTorch's update, and its two weight decays.

    `decoupled_weight_decay=False` is `torch.optim.Adam(weight_decay=)`:
    `weight_decay * w` joins the gradient before the moments (L2).
    `True` is `torch.optim.AdamW`: `w *= 1 - lr * weight_decay` before the
    step, which `keras.optimizers.AdamW` does too, but Keras decays every
    variable and adds `epsilon` to the uncorrected `sqrt(v)`; PyTorch's
    step is `lr * m_hat / (sqrt(v_hat) + eps)`.

    Args:
        learning_rate: float or `LearningRateSchedule`.
        beta_1: decay of the first moment.
        beta_2: decay of the second moment.
        epsilon: added to `sqrt(v_hat)` (PyTorch's default 1e-8).
        weight_decay: decay rate, coupled (L2) or decoupled: a float or a
            schedule of the step (`keras_ssl.schedules.CosineWeightDecay`).
        decoupled_weight_decay: `True`: AdamW's decay; `False`: Adam's L2.
        exclude_bias_and_norm: no decay for rank <= 1 variables (biases,
            norm scales and offsets), as DINO's and MAE's parameter groups.
        name: optimizer name.
        **kwargs: `lr_multipliers` (above) and `keras.optimizers.Optimizer`'s
            options (`clipnorm`...).

    Example:
        >>> from keras_ssl.optimizers import Adam
        >>> model = keras_ssl.SimCLR(encoder, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=Adam(1e-3, weight_decay=0.05, decoupled_weight_decay=True))

        The first step moves every entry by `lr`, whatever its gradient's size:

        >>> w = keras.Variable(np.zeros(3))
        >>> _ = Adam(0.1).apply_gradients([(ops.convert_to_tensor([1e-3, 1.0, -50.0]), w)])
        >>> np.round(np.asarray(w, "float64"), 4).tolist()
        [-0.1, -0.1, 0.1]
    """

    def __init__(
        self,
        learning_rate=1e-3,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        weight_decay=0.0,
        decoupled_weight_decay=False,
        exclude_bias_and_norm=True,
        name="adam",
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not (0 <= beta_1 < 1 and 0 <= beta_2 < 1) or epsilon < 0:
            raise ValueError(f"Need betas in [0, 1) and epsilon >= 0, got {beta_1}, {beta_2}, {epsilon}.")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        # Not Keras's `weight_decay`, which would decay again.
        self.adam_weight_decay = schedules.weight_decay(weight_decay)
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self.exclude_bias_and_norm = bool(exclude_bias_and_norm)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums, self.velocities = self.add_optimizer_variables(variables, ["momentum", "velocity"])

    def update_step(self, gradient, variable, learning_rate):
        lr = self._rate(learning_rate, variable)
        g = ops.cast(gradient, variable.dtype)
        w = ops.convert_to_tensor(variable)
        step = ops.cast(self.iterations + 1, variable.dtype)
        decay = self.adam_weight_decay if _decayed(variable, self.exclude_bias_and_norm) else 0.0
        wd = schedules.weight_decay_at(decay, self.iterations, variable.dtype)
        if decay and not self.decoupled_weight_decay:
            g = g + wd * w
        index = keras_compat.variable_index(self, variable)
        m, v = self.momentums[index], self.velocities[index]
        m_new = self.beta_1 * m + (1 - self.beta_1) * g
        v_new = self.beta_2 * v + (1 - self.beta_2) * ops.square(g)
        self.assign(m, m_new)
        self.assign(v, v_new)
        m_hat = m_new / (1 - ops.power(ops.cast(self.beta_1, variable.dtype), step))
        v_hat = v_new / (1 - ops.power(ops.cast(self.beta_2, variable.dtype), step))
        if decay and self.decoupled_weight_decay:
            w = w * (1 - lr * wd)
        self.assign(variable, w - lr * m_hat / (ops.sqrt(v_hat) + self.epsilon))

    def get_config(self):
        config = super().get_config()
        config.update(
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            weight_decay=schedules.serialize_weight_decay(self.adam_weight_decay),
            decoupled_weight_decay=self.decoupled_weight_decay,
            exclude_bias_and_norm=self.exclude_bias_and_norm,
        )
        return config


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
