"""Self-supervised methods; `METHODS` maps the CLI names to the image-only methods."""

from keras_ssl.engine import SSLModel
from keras_ssl.methods.barlow_twins import BarlowTwins
from keras_ssl.methods.byol import BYOL
from keras_ssl.methods.clip import CLIP
from keras_ssl.methods.deepcluster import DeepClusterV2
from keras_ssl.methods.dino import DINO
from keras_ssl.methods.dinov2 import DINOv2
from keras_ssl.methods.fastsiam import FastSiam
from keras_ssl.methods.ibot import IBOT
from keras_ssl.methods.ijepa import IJEPA
from keras_ssl.methods.mae import MAE
from keras_ssl.methods.mmcr import MMCR
from keras_ssl.methods.moco import MoCo
from keras_ssl.methods.moco_v2 import MoCoV2
from keras_ssl.methods.moco_v3 import MoCoV3
from keras_ssl.methods.msn import MSN
from keras_ssl.methods.nn_siamese import NNBYOL, NNSiam
from keras_ssl.methods.nnclr import NNCLR
from keras_ssl.methods.ressl import ReSSL
from keras_ssl.methods.siglip import SigLIP
from keras_ssl.methods.simclr import SimCLR
from keras_ssl.methods.simmim import SimMIM
from keras_ssl.methods.simsiam import SimSiam
from keras_ssl.methods.slip import SLIP
from keras_ssl.methods.supcon import SupCon
from keras_ssl.methods.swav import SwAV
from keras_ssl.methods.tico import TiCo
from keras_ssl.methods.vibcreg import VIbCReg
from keras_ssl.methods.vicreg import VICReg
from keras_ssl.methods.wmse import WMSE

METHODS = {
    "simclr": SimCLR,
    "moco": MoCoV2,
    "moco_v3": MoCoV3,
    "byol": BYOL,
    "nnclr": NNCLR,
    "simsiam": SimSiam,
    "barlow_twins": BarlowTwins,
    "vicreg": VICReg,
    "swav": SwAV,
    "dino": DINO,
    "mae": MAE,
    "ibot": IBOT,
    "dinov2": DINOv2,
    "ijepa": IJEPA,
    "simmim": SimMIM,
    "msn": MSN,
    "fastsiam": FastSiam,
    "nnbyol": NNBYOL,
    "nnsiam": NNSiam,
    "ressl": ReSSL,
    "mmcr": MMCR,
    "wmse": WMSE,
    "tico": TiCo,
    "vibcreg": VIbCReg,
    "supcon": SupCon,
    "deepclusterv2": DeepClusterV2,
}
