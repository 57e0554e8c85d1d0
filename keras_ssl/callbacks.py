"""Callbacks: what happens around `fit` (schedules and online monitors)."""

import keras


@keras.saving.register_keras_serializable(package="keras_ssl")
class MomentumScheduler(keras.callbacks.Callback):
    """Tells the model how many optimizer steps the `fit` call will take.

    The model computes its EMA momentum inside the compiled step from its own
    step counter (`SSLModel.current_momentum`), so the schedule is exact with
    `steps_per_execution > 1` and after resuming (`initial_epoch`, or
    `BackupAndRestore`, which restores the step counter). This callback owns
    the schedule: it sets the run length, and optionally the end points.
    `SSLModel.fit` adds one when none is given.

    Args:
        tau_base: momentum at step 0 (default: the method's).
        tau_end: momentum at the last step (default: the method's, usually 1).
        total_steps: run length; defaults to `epochs * steps_per_epoch` of `fit`.

    Example:
        >>> model.fit(x, epochs=100, callbacks=[MomentumScheduler(tau_base=0.99)])
    """

    def __init__(self, tau_base=None, tau_end=None, total_steps=None):
        super().__init__()
        self.tau_base, self.tau_end, self.total_steps = tau_base, tau_end, total_steps

    def on_train_begin(self, logs=None):
        model = self.model
        if self.tau_base is not None or self.tau_end is not None:
            if model.tau_base is None:
                raise ValueError(f"{type(model).__name__} has no momentum schedule to set.")
            model.set_momentum_schedule(
                model.tau_base if self.tau_base is None else self.tau_base,
                model.tau_end if self.tau_end is None else self.tau_end,
            )
        total = self.total_steps
        if total is None:
            epochs, steps = self.params.get("epochs"), self.params.get("steps")
            total = epochs * steps if epochs and steps else 0
        model.total_steps.assign(int(total))

    def get_config(self):
        return {"tau_base": self.tau_base, "tau_end": self.tau_end, "total_steps": self.total_steps}
