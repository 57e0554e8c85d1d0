"""Self-supervised losses: pure functions of tensors, computed in float32.

Every function casts its inputs to float32 on entry so that the result is the
same under a mixed-precision policy, masks with `ops.where` (never a literal
large number, which overflows float16) and works in log space.
"""

from keras_ssl.losses.alignment import (
    barlow_twins,
    barlow_twins_terms,
    byol_loss,
    negative_cosine,
    vicreg,
    vicreg_terms,
)
from keras_ssl.losses.clustering import dino, sinkhorn, swav
from keras_ssl.losses.common import embedding_std, l2_normalize
from keras_ssl.losses.contrastive import clip, info_nce, nt_xent
from keras_ssl.losses.reconstruction import mae_reconstruction, patch_statistics

__all__ = [
    "barlow_twins",
    "barlow_twins_terms",
    "byol_loss",
    "clip",
    "dino",
    "embedding_std",
    "info_nce",
    "l2_normalize",
    "mae_reconstruction",
    "negative_cosine",
    "nt_xent",
    "patch_statistics",
    "sinkhorn",
    "swav",
    "vicreg",
    "vicreg_terms",
]
