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
from keras_ssl.losses.clustering import dino, self_distillation, sinkhorn, swav
from keras_ssl.losses.common import embedding_std, l2_normalize
from keras_ssl.losses.contrastive import clip, dcl, info_nce, nt_xent, supcon, von_mises_weights
from keras_ssl.losses.covariance import tico, tico_covariance, tico_terms, vibcreg, vibcreg_terms
from keras_ssl.losses.deepcluster import deepcluster_v2, spherical_kmeans
from keras_ssl.losses.distillation import gathered_patch_distillation, koleo, masked_patch_distillation, masked_sinkhorn
from keras_ssl.losses.manifold import mmcr, nuclear_norm
from keras_ssl.losses.predictive import ijepa
from keras_ssl.losses.prototypes import me_max, msn, msn_targets, prototype_log_probs
from keras_ssl.losses.reconstruction import mae_reconstruction, patch_statistics, simmim_reconstruction
from keras_ssl.losses.relational import ressl
from keras_ssl.losses.sigmoid import siglip
from keras_ssl.losses.whitening import cholesky_whiten, wmse

__all__ = [
    "spherical_kmeans",
    "deepcluster_v2",
    "vibcreg_terms",
    "vibcreg",
    "tico_terms",
    "tico_covariance",
    "tico",
    "von_mises_weights",
    "supcon",
    "dcl",
    "barlow_twins",
    "barlow_twins_terms",
    "byol_loss",
    "cholesky_whiten",
    "clip",
    "dino",
    "embedding_std",
    "ijepa",
    "info_nce",
    "koleo",
    "l2_normalize",
    "mae_reconstruction",
    "gathered_patch_distillation",
    "masked_patch_distillation",
    "masked_sinkhorn",
    "me_max",
    "mmcr",
    "msn",
    "msn_targets",
    "negative_cosine",
    "nt_xent",
    "nuclear_norm",
    "patch_statistics",
    "prototype_log_probs",
    "ressl",
    "self_distillation",
    "siglip",
    "simmim_reconstruction",
    "sinkhorn",
    "swav",
    "vicreg",
    "vicreg_terms",
    "wmse",
]
