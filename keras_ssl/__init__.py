"""keras_ssl: self-supervised representation learning for Keras 3.

The same code trains on TensorFlow, JAX and PyTorch (`KERAS_BACKEND`).
`import keras_ssl` registers every class with Keras, so a saved model loads
with `keras.saving.load_model`.

Example:
    >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
    >>> model = keras_ssl.SimCLR(encoder)
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> history = model.fit(x_small, epochs=1, batch_size=8, verbose=0)
    >>> model.encoder.save(os.path.join(tmp_dir, "encoder.keras"))
"""

from keras_ssl import (
    backbones,
    backend,
    callbacks,
    checkpoints,
    data,
    distribute,
    engine,
    evaluation,
    initializers,
    keras_compat,
    layers,
    losses,
    methods,
    monitors,
    optimizers,
    recipes,
    text,
    views,
)
from keras_ssl.engine import SSLModel
from keras_ssl.methods import (
    BYOL,
    CLIP,
    DINO,
    IBOT,
    IJEPA,
    MAE,
    METHODS,
    MMCR,
    MSN,
    NNBYOL,
    NNCLR,
    SLIP,
    WMSE,
    BarlowTwins,
    DeepClusterV2,
    DINOv2,
    FastSiam,
    MoCo,
    MoCoV2,
    MoCoV3,
    NNSiam,
    ReSSL,
    SigLIP,
    SimCLR,
    SimMIM,
    SimSiam,
    SupCon,
    SwAV,
    TiCo,
    VIbCReg,
    VICReg,
)

__version__ = "0.1.0"

__all__ = [
    "BYOL",
    "CLIP",
    "DINO",
    "DINOv2",
    "FastSiam",
    "IBOT",
    "IJEPA",
    "MAE",
    "METHODS",
    "MMCR",
    "MSN",
    "NNBYOL",
    "NNCLR",
    "NNSiam",
    "ReSSL",
    "SLIP",
    "SigLIP",
    "BarlowTwins",
    "DeepClusterV2",
    "MoCo",
    "MoCoV2",
    "MoCoV3",
    "SSLModel",
    "SimCLR",
    "SimMIM",
    "SimSiam",
    "SupCon",
    "SwAV",
    "TiCo",
    "VIbCReg",
    "VICReg",
    "WMSE",
    "backbones",
    "backend",
    "callbacks",
    "checkpoints",
    "data",
    "distribute",
    "engine",
    "evaluation",
    "initializers",
    "keras_compat",
    "layers",
    "losses",
    "methods",
    "monitors",
    "optimizers",
    "recipes",
    "text",
    "views",
]
