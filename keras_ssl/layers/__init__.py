"""Layers shared by the methods: augmentation, heads, memory banks, masking."""

from keras_ssl.layers.augment import (
    ColorJitter,
    MultiCrop,
    RandomApply,
    RandomResizedCrop,
    byol_augmenters,
    color_jitter,
    simclr_augmenter,
)
from keras_ssl.layers.heads import DINOHead, PredictionHead, ProjectionHead, Prototypes, ZeroShotHead
from keras_ssl.layers.memory import MemoryBank
