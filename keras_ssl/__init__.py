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

__version__ = "0.1.0"

from keras_ssl import backbones, callbacks, data, distribute, evaluation, layers, losses, optimizers, text  # noqa: E402
from keras_ssl.methods import (  # noqa: E402
    BYOL,
    CLIP,
    DINO,
    MAE,
    METHODS,
    NNCLR,
    BarlowTwins,
    MoCo,
    MoCoV2,
    MoCoV3,
    SimCLR,
    SimSiam,
    SSLModel,
    SwAV,
    VICReg,
)
