"""Backend-specific glue: the only module that branches on the Keras backend."""

import keras


def backend():
    """The active Keras backend name ("tensorflow", "jax" or "torch")."""
    return keras.backend.backend()


def resolve_jit_compile(jit_compile="auto"):
    """The compile mode measured fastest on CPU for this backend.

    `"auto"` gives XLA on JAX (jit), a plain graph on TensorFlow (XLA was
    slower and adds minutes of compile time on CPU) and eager on PyTorch
    (`torch.compile` likewise). An explicit `True`/`False` is kept.

    Example:
        >>> model.compile(jit_compile=resolve_jit_compile())
    """
    if jit_compile != "auto":
        return bool(jit_compile)
    return backend() == "jax"
