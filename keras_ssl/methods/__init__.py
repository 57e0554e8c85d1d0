"""Self-supervised methods; `METHODS` maps the CLI names to classes."""

from keras_ssl.methods.base import SSLModel
from keras_ssl.methods.simclr import SimCLR

METHODS = {"simclr": SimCLR}
