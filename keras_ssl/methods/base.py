"""Where earlier releases defined `SSLModel`; it lives in `keras_ssl.engine` now."""

from keras_ssl.engine import (  # noqa: F401
    SSLModel,
    momentum_target,
    momentum_update,
    pool_features,
)
