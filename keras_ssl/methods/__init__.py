"""Self-supervised methods; `METHODS` maps the CLI names to classes."""

from keras_ssl.methods.base import SSLModel
from keras_ssl.methods.byol import BYOL
from keras_ssl.methods.moco import MoCo
from keras_ssl.methods.nnclr import NNCLR
from keras_ssl.methods.simclr import SimCLR

METHODS = {"simclr": SimCLR, "moco": MoCo, "byol": BYOL, "nnclr": NNCLR}
