"""Layers shared by the methods: heads, memory banks, masking, Keras's BatchNorm and Conv2D on faster kernels,
and BatchNorm synchronised across replicas (`synchronize_batch_norm`).

The view makers and augmentation layers live in `keras_ssl.views`; they are
also importable from here, where earlier releases had them.
"""

from keras_ssl.layers.block_masks import BlockMasking, block_masks, blockwise_masks, mask_targets, paper_masking
from keras_ssl.layers.cluster_memory import ClusterMemory
from keras_ssl.layers.conv import Conv2D
from keras_ssl.layers.heads import (
    DINOHead,
    MSNHead,
    PredictionHead,
    ProjectionHead,
    Prototypes,
    ZeroShotHead,
)
from keras_ssl.layers.iternorm import IterNorm, iternorm_groups
from keras_ssl.layers.memory import MemoryBank, nearest_neighbour
from keras_ssl.layers.multiblock_masks import MultiBlockMasking, multiblock_masks
from keras_ssl.layers.normalization import BatchNormalization, synchronize_batch_norm
from keras_ssl.layers.random_masks import RandomSquareMasking, random_square_masks
from keras_ssl.views import (
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
    color_jitter,
    crop_view,
    multi_crop_views,
    simclr_augmenter,
    simclr_views,
)
