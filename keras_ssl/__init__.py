"""keras_ssl: self-supervised representation learning for Keras 3.

The same code trains on TensorFlow, JAX and PyTorch (`KERAS_BACKEND`).

Example:
    >>> import keras, keras_ssl
    >>> encoder = keras_ssl.backbones.resnet18(input_shape=(32, 32, 3))
    >>> model = keras_ssl.SimCLR(encoder)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(x_train, epochs=10, batch_size=256)
    >>> model.encoder.save("encoder.keras")
"""

import importlib
import os
import sys

__version__ = "0.1.0"

_SUBMODULES = ("backbones", "callbacks", "checkpoints", "data", "distribute", "evaluation", "layers", "losses", "optimizers",
               "text", "methods")
_METHODS = ("BYOL", "CLIP", "DINO", "MAE", "METHODS", "NNCLR", "BarlowTwins", "MoCo", "MoCoV2", "MoCoV3",
            "SimCLR", "SimSiam", "SSLModel", "SwAV", "VICReg")
__all__ = list(_SUBMODULES) + list(_METHODS)


def __getattr__(name):
    # PEP 562: the modules load on first use, so the command line's --help
    # needs no Keras (whose import takes seconds).
    if name in _SUBMODULES:
        return importlib.import_module(f"keras_ssl.{name}")
    if name in _METHODS:
        return getattr(importlib.import_module("keras_ssl.methods"), name)
    raise AttributeError(f"module 'keras_ssl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


def import_all():
    """Imports every module, registering every serialisable class with Keras.

    `import keras_ssl` does this already, except inside the `keras-ssl`
    command, which imports what each sub-command needs.

    Example:
        >>> keras_ssl.import_all()   # before keras.saving.load_model("model.keras")
    """
    for name in _SUBMODULES:
        importlib.import_module(f"keras_ssl.{name}")


# Loading a whole saved model needs our classes registered, and users expect
# `import keras_ssl` to be enough; only the `keras-ssl` command (whose --help
# must answer at once) defers them.
if os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "") not in ("keras-ssl", "keras-ssl.exe"):
    import_all()
