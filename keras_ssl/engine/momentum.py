"""Momentum (EMA) targets: the frozen copies MoCo, BYOL, DINO and their kin update, and the
cosine schedule of their momentum, computed inside the compiled step."""

import keras
import numpy as np
from keras import ops

from keras_ssl.backbones.clone import clone_model
from keras_ssl.keras_compat import sublayers


def momentum_target(online, input_shape=None):
    """A frozen structural copy of `online` whose weights start equal.

    Any encoder or head that `backbones.clone_model` copies works:
    functional, Sequential, subclassed, with `Lambda` layers, keras-hub
    backbones. Its variables are non-trainable one by one (not
    `layer.trainable = False`, which would switch BatchNorm to moving
    statistics), so the target's BatchNorm uses batch statistics in training
    mode, as the reference implementations do. A ViT's copy drops no paths
    (stochastic depth off, a keras-hub DINOv2's in `HubViT` too): DINO's,
    iBOT's and DINOv2's teachers are built without `drop_path_rate`. Update
    it with `momentum_update`.

    Args:
        online: the online network, built.
        input_shape: `(H, W, C)` to build a subclassed copy with.

    Example:
        >>> from keras_ssl.engine import momentum_target
        >>> projector = keras_ssl.layers.heads.ProjectionHead(hidden_dim=16, output_dim=8)
        >>> projector.build((None, 16))
        >>> target = momentum_target(projector)
        >>> any(v.trainable for v in target.weights)
        False
        >>> all(np.array_equal(a, b) for a, b in zip(projector.get_weights(), target.get_weights()))
        True
    """
    target = clone_model(online, input_shape=input_shape)
    for v in target.weights:
        v.trainable = False
    for layer in sublayers(target):
        # A float `drop_path` is a rate read at call time (`TransformerBlock`, `HubTokens`); keras-hub's
        # blocks hold a DropPath layer under that name, which HubTokens bypasses.
        if isinstance(getattr(layer, "drop_path", None), float):
            layer.drop_path = 0.0
    return target


def momentum_update(online, target, momentum):
    """`target <- momentum * target + (1 - momentum) * online`, trainable weights only.

    Example:
        >>> from keras_ssl.engine import momentum_target, momentum_update
        >>> target = momentum_target(encoder)
        >>> kernel = encoder.trainable_weights[0]
        >>> _ = kernel.assign(kernel + 1.0)   # an optimizer step moves the online weights
        >>> momentum_update(encoder, target, 0.99)
        >>> round(float(ops.mean(kernel - target.weights[0])), 4)   # the target moved 1% of the way
        0.99
    """
    for o, t in zip(online.weights, target.weights):
        if o.trainable:
            new = momentum * ops.convert_to_tensor(t) + (1.0 - momentum) * ops.stop_gradient(o)
            t.assign(ops.cast(new, t.dtype))


class MomentumTargets:
    """The momentum half of `SSLModel`: targets declared in `momentum_pairs`, and their schedule.

    The engine creates each target (a frozen copy that starts equal) once the
    method's constructor has built its heads, updates it inside the compiled
    step, and saves it with the model. The momentum follows a cosine from
    `momentum` to `momentum_end` over the optimizer steps of the `fit` call,
    whose length `engine.callbacks.MomentumScheduler` sets.
    """

    #: (online attribute, target attribute) pairs updated by EMA in the step
    momentum_pairs = ()

    def _init_momentum(self, momentum, momentum_end):
        self._momentum_ends = None
        if self.momentum_pairs:
            if momentum is None:
                raise TypeError(f"{type(self).__name__} declares momentum targets: pass `momentum`.")
            self.set_momentum_schedule(momentum, momentum if momentum_end is None else momentum_end)
        elif momentum is not None or momentum_end is not None:
            raise TypeError(f"{type(self).__name__} has no momentum target: it takes no `momentum`.")

    def _create_targets(self):
        for online, target in self.momentum_pairs:
            if getattr(self, target, None) is None:
                shape = self.image_shape if getattr(self, online) is self.encoder else None
                copy = momentum_target(getattr(self, online), input_shape=shape)
                copy.name = target  # model.summary() then tells the target from the online network
                setattr(self, target, copy)

    def set_momentum_schedule(self, momentum, momentum_end=1.0):
        """Sets the cosine momentum schedule from `momentum` to `momentum_end`.

        `current_momentum()` then follows
        `end - (end - start) * (cos(pi * step / total_steps) + 1) / 2`
        over the optimizer steps of the `fit` call (BYOL's schedule).
        """
        for name, tau in (("momentum", momentum), ("momentum_end", momentum_end)):
            if not 0.0 <= tau <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {tau}.")
        if self._momentum_ends is None:
            # A variable, not Python floats: a new schedule set by a callback
            # must reach a step function that is already compiled, and the
            # live values are what `get_config` saves.
            self._momentum_ends = self.add_weight(
                name="momentum_ends",
                shape=(2,),
                trainable=False,
                initializer=keras.initializers.Constant([momentum, momentum_end]),
            )
        else:
            self._momentum_ends.assign([momentum, momentum_end])

    @property
    def momentum(self):
        """EMA momentum at the start of the schedule (None without targets)."""
        return None if self._momentum_ends is None else _float32_value(self._momentum_ends[0])

    @property
    def momentum_end(self):
        """EMA momentum at the end of the schedule (None without targets)."""
        return None if self._momentum_ends is None else _float32_value(self._momentum_ends[1])

    def training_progress(self):
        """Fraction of the run done, in [0, 1] (0 when the length is unknown)."""
        total = ops.cast(self.total_steps, "float32")
        done = ops.cast(self.step, "float32")
        return ops.where(total > 0, ops.minimum(done / ops.maximum(total, 1.0), 1.0), 0.0)

    def current_momentum(self):
        """The EMA momentum of this step (compiled with it)."""
        base, end = self._momentum_ends[0], self._momentum_ends[1]
        cosine = (ops.cos(np.pi * self.training_progress()) + 1.0) / 2.0
        return end - (end - base) * cosine

    def _update_targets(self):
        if not self.momentum_pairs:
            return
        tau = self.current_momentum()
        for online, target in self.momentum_pairs:
            momentum_update(getattr(self, online), getattr(self, target), tau)


def _float32_value(x):
    # A float32 variable holds 0.99 as 0.99000001; its 7 significant digits
    # give back the decimal that was set.
    return float(f"{float(x):.7g}")
