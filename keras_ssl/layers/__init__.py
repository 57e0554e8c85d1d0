"""Layers shared by the methods: augmentation, view makers, heads, memory banks, masking, and Keras's BatchNorm and Conv2D on faster kernels."""

from keras_ssl.layers.augment import (
    BYOL_JITTER,
    ColorJitter,
    GaussianBlur,
    MultiCrop,
    OneView,
    RandomApply,
    RandomResizedCrop,
    SeedStream,
    TwoViews,
    ViewMaker,
    blur_kernel,
    byol_views,
    crop_view,
    multi_crop_views,
    simclr_views,
    color_jitter,
    simclr_augmenter,
)
from keras_ssl.layers.conv import Conv2D
from keras_ssl.layers.heads import DINOHead, PredictionHead, ProjectionHead, Prototypes, ZeroShotHead
from keras_ssl.layers.memory import MemoryBank
from keras_ssl.layers.normalization import BatchNormalization
from keras_ssl.layers.momentum import momentum_target, momentum_update
