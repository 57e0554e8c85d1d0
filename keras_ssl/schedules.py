"""The papers' schedules: warm-up + cosine (or SimMIM's steps) learning rate, and the ViT methods' cosine weight decay.

DINO, iBOT, DINOv2, I-JEPA and MSN raise the weight decay along a cosine
(0.04 -> 0.4), setting `param_group["weight_decay"]` before every step. A
`weight_decay` of `keras_ssl.optimizers` is a float or a schedule, a
callable of the step: the optimizer evaluates it from its `iterations`
inside each (compiled) step, as Keras evaluates a learning-rate schedule.
"""

import math
import numbers

import keras
from keras import ops


def _check_integer(label, value, least):
    if int(value) != value or value < least:
        raise ValueError(f"`{label}` must be an integer >= {least}, got {value!r}.")


def _ramp(initial, peak, step, steps):
    """The linear warm-up: `initial` at step 0, `peak` at `steps`."""
    return initial + (peak - initial) * step / max(steps, 1)


def _cosine(start, end, progress):
    """`start` at progress 0, `end` at progress 1, along half a cosine."""
    return end + 0.5 * (start - end) * (1 + ops.cos(math.pi * progress))


@keras.saving.register_keras_serializable(package="keras_ssl")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `initial` to `peak`, then cosine decay to `final`.

    At optimizer step `t` (0 at the first update) with `s = t + step_offset`
    and `W = warmup_steps`, the rate is `initial + (peak - initial) * s / W`
    while `s < W`, then the cosine from `peak` at `s = W` to `final` at
    `s = total_steps`. The papers' variants:

    - SimCLR, BYOL, MAE: the defaults;
    - DINO, iBOT, DINOv2 (`cosine_scheduler`, `CosineScheduler`): the warm-up
      is `np.linspace(initial, peak, W)`, at the peak one step early:
      `linspace_warmup=True`;
    - I-JEPA, MSN (`WarmupCosineSchedule`): warm-up from `start_lr`
      (`initial`), and the scheduler steps once before each update:
      `step_offset=1`.

    Args:
        peak: learning rate at the end of warm-up.
        total_steps: length of the whole schedule in optimizer steps.
        warmup_steps: steps of linear warm-up (10 epochs in SimCLR/BYOL).
        final: learning rate at `total_steps` (and after).
        initial: learning rate at the first warm-up step.
        step_offset: steps the schedule runs ahead of the optimizer's count.
        linspace_warmup: reach `peak` at step `warmup_steps - 1`.

    Example:
        >>> schedule = keras_ssl.schedules.WarmupCosine(1e-3, total_steps=1000, warmup_steps=100)
        >>> [round(float(schedule(step)), 6) for step in (0, 50, 100, 550, 1000)]
        [0.0, 0.0005, 0.001, 0.0005, 0.0]
        >>> ijepa = keras_ssl.schedules.WarmupCosine(1e-3, 1000, 100, final=1e-6, initial=2e-4, step_offset=1)
        >>> round(float(ijepa(0)), 6)
        0.000208
        >>> optimizer = keras.optimizers.AdamW(schedule)
    """

    def __init__(self, peak, total_steps, warmup_steps=0, final=0.0, initial=0.0, step_offset=0, linspace_warmup=False):
        if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"Need total_steps > 0 and 0 <= warmup_steps <= total_steps, got {total_steps}, {warmup_steps}."
            )
        _check_integer("step_offset", step_offset, 0)
        self.peak, self.final, self.initial = float(peak), float(final), float(initial)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.step_offset, self.linspace_warmup = int(step_offset), bool(linspace_warmup)

    def __call__(self, step):
        step = ops.cast(step, "float32") + self.step_offset
        warm = _ramp(
            self.initial, self.peak, step, self.warmup_steps - 1 if self.linspace_warmup else self.warmup_steps
        )
        progress = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        return ops.where(step < self.warmup_steps, warm, _cosine(self.peak, self.final, progress))

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final": self.final,
            "initial": self.initial,
            "step_offset": self.step_offset,
            "linspace_warmup": self.linspace_warmup,
        }


@keras.saving.register_keras_serializable(package="keras_ssl")
class WarmupMultiStep(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `initial` to `peak`, then `peak` times `gamma` per milestone passed (SimMIM's).

    At optimizer step `t` with `s = max(t + step_offset, 0)` the rate is
    `initial + (peak - initial) * s / warmup_steps` while `s < warmup_steps`,
    then `peak * gamma ** (number of milestones <= s)`: SimMIM's
    `MultiStepLRScheduler` (`bisect_right`). SimMIM sets each update's rate
    after the update before it (`step_update(epoch * num_steps + idx)`), so
    update `t` gets the scheduler's value at `t - 1`: `step_offset=-1`.

    Args:
        peak: the rate after warm-up.
        milestones: optimizer steps where the rate drops by `gamma`.
        gamma: the factor per milestone.
        warmup_steps: steps of linear warm-up (at most the first milestone).
        initial: the rate at the first warm-up step (SimMIM's `WARMUP_LR`).
        step_offset: steps the schedule runs ahead of the optimizer's count.

    Example:
        >>> schedule = keras_ssl.schedules.WarmupMultiStep(1e-3, milestones=[80], warmup_steps=10)
        >>> [round(float(schedule(step)), 6) for step in (0, 5, 10, 79, 80, 200)]
        [0.0, 0.0005, 0.001, 0.001, 0.0001, 0.0001]
    """

    def __init__(self, peak, milestones, gamma=0.1, warmup_steps=0, initial=0.0, step_offset=0):
        self.milestones = sorted(int(m) for m in milestones)
        _check_integer("warmup_steps", warmup_steps, 0)
        if int(step_offset) != step_offset:
            raise ValueError(f"`step_offset` must be an integer, got {step_offset!r}.")
        if self.milestones and warmup_steps > self.milestones[0]:
            raise ValueError(f"The warm-up ({warmup_steps} steps) must end by the first milestone {self.milestones}.")
        self.peak, self.gamma, self.initial = float(peak), float(gamma), float(initial)
        self.warmup_steps, self.step_offset = int(warmup_steps), int(step_offset)

    def __call__(self, step):
        step = ops.maximum(ops.cast(step, "float32") + self.step_offset, 0.0)
        passed = sum((ops.cast(step >= m, "float32") for m in self.milestones), 0.0)
        stepped = self.peak * ops.power(self.gamma, passed)
        return ops.where(step < self.warmup_steps, _ramp(self.initial, self.peak, step, self.warmup_steps), stepped)

    def get_config(self):
        return {
            "peak": self.peak,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
            "warmup_steps": self.warmup_steps,
            "initial": self.initial,
            "step_offset": self.step_offset,
        }


@keras.saving.register_keras_serializable(package="keras_ssl")
class CosineWeightDecay:
    """A weight decay that follows a cosine from `start` to `end` over `total_steps` (DINO's ViTs: 0.04 -> 0.4).

    At optimizer step `t` (0 at the first update) the decay is
    `end + (start - end) * (1 + cos(pi * min((t + step_offset) / total_steps, 1))) / 2`.
    With `step_offset=0` this is DINO's and iBOT's
    `cosine_scheduler(start, end, epochs, niter_per_ep)[t]` and DINOv2's
    `CosineScheduler(start, end, total_steps)[t]` (end after the run, as
    DINOv2's); `step_offset=1` is I-JEPA's and MSN's `CosineWDSchedule`,
    which steps once before each update. Pass it as the `weight_decay` of
    `keras_ssl.optimizers.SGD`, `Adam` or `LARS`.

    Args:
        start: the decay at the first step (>= 0).
        end: the decay at `total_steps` and after (>= 0).
        total_steps: optimizer steps of the cosine: the run's.
        step_offset: steps the schedule runs ahead of the optimizer's count.

    Example:
        >>> wd = keras_ssl.schedules.CosineWeightDecay(0.04, 0.4, total_steps=100)
        >>> [round(float(wd(step)), 4) for step in (0, 50, 100, 200)]
        [0.04, 0.22, 0.4, 0.4]
        >>> optimizer = keras_ssl.optimizers.Adam(1e-3, weight_decay=wd, decoupled_weight_decay=True)
        >>> model = keras_ssl.SimCLR(encoder, projection_dim=8, hidden_dim=16)
        >>> model.compile(optimizer=optimizer)
    """

    def __init__(self, start, end, total_steps, step_offset=0):
        if not (start >= 0 and end >= 0):
            raise ValueError(f"Weight decays must be >= 0, got start={start!r}, end={end!r}.")
        _check_integer("total_steps", total_steps, 1)
        _check_integer("step_offset", step_offset, 0)
        self.start, self.end = float(start), float(end)
        self.total_steps, self.step_offset = int(total_steps), int(step_offset)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        progress = ops.minimum((step + self.step_offset) / self.total_steps, 1.0)
        return _cosine(self.start, self.end, progress)

    def get_config(self):
        return {"start": self.start, "end": self.end, "total_steps": self.total_steps, "step_offset": self.step_offset}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def weight_decay(value):
    """A `weight_decay` argument as an optimizer keeps it: a float >= 0 or a schedule.

    Args:
        value: a number >= 0, a schedule (a callable of the step, such as
            `CosineWeightDecay`), or a schedule's serialized config (as
            `get_config` writes it).

    Returns:
        The float, or the schedule.

    Example:
        >>> keras_ssl.schedules.weight_decay(5e-4)
        0.0005
        >>> config = keras.saving.serialize_keras_object(keras_ssl.schedules.CosineWeightDecay(0.04, 0.4, 10))
        >>> keras_ssl.schedules.weight_decay(config).end
        0.4
    """
    if isinstance(value, dict):
        value = keras.saving.deserialize_keras_object(value)
    if callable(value):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"`weight_decay` must be a number >= 0 or a schedule (a callable of the step), got {value!r}.")
    return float(value)


def serialize_weight_decay(value):
    """A float as it is, a schedule as its Keras config (the inverse of `weight_decay`).

    Args:
        value: what `weight_decay` returned.

    Returns:
        A float or a JSON-able dict.

    Example:
        >>> from keras_ssl.schedules import CosineWeightDecay, serialize_weight_decay
        >>> serialize_weight_decay(0.05)
        0.05
        >>> serialize_weight_decay(CosineWeightDecay(0.04, 0.4, 10))["config"]
        {'start': 0.04, 'end': 0.4, 'total_steps': 10, 'step_offset': 0}
    """
    return value if isinstance(value, float) else keras.saving.serialize_keras_object(value)


def weight_decay_at(value, step, dtype):
    """The decay at `step`: a float as it is, a schedule evaluated and cast to `dtype`.

    Called inside the optimizer's update with `step=self.iterations`, so a
    compiled step reads the current step each time, not a value fixed when
    it was traced.

    Args:
        value: a float or a schedule (what `weight_decay` returned).
        step: the optimizer step (a variable, tensor or number).
        dtype: the variable's dtype.

    Returns:
        A float or a scalar tensor.

    Example:
        >>> from keras_ssl.schedules import CosineWeightDecay, weight_decay_at
        >>> round(float(weight_decay_at(CosineWeightDecay(0.0, 1.0, total_steps=4), 2, "float32")), 6)
        0.5
        >>> weight_decay_at(0.1, 2, "float32")
        0.1
    """
    return ops.cast(value(step), dtype) if callable(value) else value
