"""keras_ssl: self-supervised representation learning for Keras 3."""

__version__ = "0.1.0"
