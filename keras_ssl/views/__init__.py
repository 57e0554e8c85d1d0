"""Views: per-sample augmentation layers, view makers and every paper's recipe.

- `augment`: `RandomResizedCrop`, `GaussianBlur`, `Solarize`, `RandomApply`,
  `simclr_augmenter` (one view's pipeline); `color`: `ColorJitter`.
- `makers`: `OneView`, `TwoViews`, `ManyViews`, `ChainedViews`, `MultiCrop` (a batch in, a list of views out).
- `recipes` and `multi_crop` (the multi-crop papers): each paper's views (`simclr_views`, `byol_views`,
  `mocov2_views`, `multi_crop_views`, `dino_views`, `fastsiam_views`, `ressl_views`, `ibot_views`, `dinov2_views`, `crop_view`, `clip_view`, and `ReSSLMultiCrop`).
- `seeds`: `SeedStream`, one distinct seed per random layer.
"""

from keras_ssl.views.augment import (
    GaussianBlur,
    RandomApply,
    RandomResizedCrop,
    Solarize,
    blur_kernel,
    simclr_augmenter,
)
from keras_ssl.views.color import ColorJitter, color_jitter
from keras_ssl.views.makers import ChainedViews, ManyViews, MultiCrop, OneView, TwoViews, ViewMaker
from keras_ssl.views.multi_crop import (
    ReSSLMultiCrop,
    dino_views,
    dinov2_views,
    ibot_views,
    msn_views,
    multi_crop_views,
)
from keras_ssl.views.recipes import (
    BYOL_JITTER,
    byol_views,
    clip_view,
    crop_view,
    fastsiam_views,
    ijepa_view,
    mmcr_views,
    mocov2_views,
    ressl_views,
    simclr_views,
    simmim_views,
    slip_views,
    supcon_views,
    wmse_views,
)
from keras_ssl.views.seeds import SeedStream
