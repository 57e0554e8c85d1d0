"""The training-step engine every method shares.

- `model`: `SSLModel`, the `keras.Model` a method subclasses.
- `contract`: what a method declares, the config derived from it, and the
  checks made at construction and build.
- `momentum`: momentum targets and their cosine schedule.
- `introspection`: the encoder's input shape, feature size, accepted views.
- `fit`: the data policy of `fit`/`evaluate` and the callbacks it adds.
- `callbacks`: `MomentumScheduler`, `StopOnNaN`, `DataEpochs`.

The engine imports no method, no evaluation and no command line.
"""

from keras_ssl.engine.callbacks import DataEpochs, MomentumScheduler, StopOnNaN
from keras_ssl.engine.contract import MethodContract
from keras_ssl.engine.introspection import pool_features
from keras_ssl.engine.model import SSLModel
from keras_ssl.engine.momentum import (
    MomentumTargets,
    momentum_target,
    momentum_update,
)
