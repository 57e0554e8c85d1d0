"""Evaluating a trained encoder: kNN, linear probe, fine-tuning, and metrics.

Works with any encoder: a `keras.Model` (or callable layer) mapping float
images in [0, 1], `(B, H, W, C)`, to features `(B, D)`; rank-4 outputs are
global-average-pooled. Say which protocol a number comes from: they differ
by points (see `knn_classify`, `linear_probe`, `fine_tune`).

The offline protocols (kNN, metrics) run in NumPy; training runs in Keras
on whichever backend is active.
"""

from keras_ssl.evaluation.knn import (
    embed,
    knn_accuracy,
    knn_classify,
    nearest_neighbors,
    raw_pixel_knn,
)
from keras_ssl.evaluation.probes import (
    GradientScale,
    fine_tune,
    labeled_subset,
    linear_probe,
    semi_supervised,
)
from keras_ssl.evaluation.representation import (
    alignment,
    embedding_std,
    rankme,
    recall_at_k,
    uniformity,
)
from keras_ssl.evaluation.zero_shot import zero_shot_classifier

__all__ = [
    "GradientScale",
    "alignment",
    "embed",
    "embedding_std",
    "fine_tune",
    "knn_accuracy",
    "knn_classify",
    "labeled_subset",
    "linear_probe",
    "nearest_neighbors",
    "rankme",
    "raw_pixel_knn",
    "recall_at_k",
    "semi_supervised",
    "uniformity",
    "zero_shot_classifier",
]
