"""Callbacks: what happens around `fit`.

The engine's own (`MomentumScheduler`, `StopOnNaN`, `DataEpochs`, which
`SSLModel.fit` adds, and `order_callbacks`, which puts every finiteness
guard ahead of the checkpoint callbacks), the kill-safe `BackupAndRestore`,
and the online monitors of `keras_ssl.monitors` (`KNNMonitor`,
`LinearProbeMonitor`, `CollapseMonitor`), all importable from here.
"""

from keras_ssl.checkpoints import BackupAndRestore
from keras_ssl.engine.callbacks import DataEpochs, MomentumScheduler, StopOnNaN, order_callbacks
from keras_ssl.monitors import (
    CollapseMonitor,
    KNNMonitor,
    LinearProbeMonitor,
    alternate_split,
)

__all__ = [
    "BackupAndRestore",
    "CollapseMonitor",
    "DataEpochs",
    "KNNMonitor",
    "LinearProbeMonitor",
    "MomentumScheduler",
    "StopOnNaN",
    "alternate_split",
    "order_callbacks",
]
