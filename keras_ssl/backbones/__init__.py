"""Encoders: ResNets (CIFAR and ImageNet stems), a tiny conv net, ViTs,
`keras.applications` and keras-hub backbones (pooled, or keras-hub ViT/DINOv2 as
token encoders: `HubViT`), and `get` by name."""

from keras_ssl.backbones.clone import clone_model, plain_keras
from keras_ssl.backbones.external import (
    ALIASES,
    application,
    application_names,
    from_keras_hub,
    input_scaling,
    rescales_0_255,
)
from keras_ssl.backbones.hub_vit import HubViT
from keras_ssl.backbones.resnet import (
    resnet,
    resnet18,
    resnet34,
    resnet50,
    tiny_encoder,
)
from keras_ssl.backbones.vit import ViT, vit, vit_base, vit_small, vit_tiny

OWN = ("tiny", "resnet18", "resnet34", "resnet50", "vit_tiny", "vit_small")


def get(
    name,
    input_shape,
    width=1.0,
    weights=None,
    tokens=False,
    resnet_init=("torchvision", False),
    vit_init="timm",
    vit_options=None,
):
    """An encoder by name, as the CLI's `--backbone` takes it.

    Args:
        name: one of keras_ssl's own (`OWN`: tiny, resnet18/34/50 with the
            CIFAR stem up to 64 px and the ImageNet stem above, vit_tiny and
            vit_small with 4-px patches up to 64 px, else 16), a
            `keras.applications` class name or short name (`ALIASES`:
            `"MobileNetV3Small"`, `"efficientnet_b0"`...), or
            `"hub:<preset>"` for a keras-hub preset (name or directory).
        input_shape: `(H, W, C)`; H and W may be None (multi-crop) except
            for ViTs, which need the size.
        width: width multiplier of keras_ssl's own conv nets.
        weights: local weights file (or "imagenet") for keras.applications.
        tokens: a token encoder (a `ViT`) for the methods that declare
            `token_encoder` (iBOT, DINOv2, I-JEPA, MAE, MSN, SimMIM): a
            keras-hub preset becomes a `HubViT` at `input_shape`
            (`from_keras_hub(..., tokens=True)`); conv nets are refused.
        resnet_init: `(initializer, zero_init_residual)` of the ResNets; the
            CLI passes the method's `resnet_init`, its official code's.
        vit_init: the `initializer` preset of vit_tiny and vit_small; the
            CLI passes the method's `vit_init`, its official code's.
        vit_options: their other `ViT` options (`positions`, `class_token`,
            `layerscale`, ...); the CLI passes the method's `vit_options`.

    Returns:
        A `keras.Model` mapping [0, 1] images to `(B, D)` features.

    Example:
        >>> encoder = keras_ssl.backbones.get("resnet18", (16, 16, 3), width=0.25)
        >>> encoder.name, encoder.output_shape   # CIFAR stem at 16 px, 512 * width features
        ('resnet18', (None, 128))
        >>> tuple(keras_ssl.backbones.get("tiny", (16, 16, 3), width=0.25)(images).shape)
        (8, 32)
    """
    size = input_shape[0]
    if tokens and not name.startswith(("vit_", "hub:")):
        raise ValueError(
            f"{name!r} is no token encoder: the method works on patch tokens; use vit_tiny, vit_small or "
            "hub:<a keras-hub ViT or DINOv2 preset>."
        )
    if name == "tiny":
        return tiny_encoder(input_shape=input_shape, width=max(8, int(round(32 * width))))
    if name in ("resnet18", "resnet34", "resnet50"):
        stem = "cifar" if size is None or size <= 64 else "imagenet"
        initializer, zero_init_residual = resnet_init
        return globals()[name](
            input_shape=input_shape,
            stem=stem,
            width=width,
            initializer=initializer,
            zero_init_residual=zero_init_residual,
        )
    if name in ("vit_tiny", "vit_small"):
        if size is None:
            raise ValueError(f"{name} needs a fixed image size, got input_shape={input_shape}.")
        patch = 4 if size <= 64 else 16
        return globals()[name](
            image_size=size, patch_size=patch, channels=input_shape[-1], initializer=vit_init, **(vit_options or {})
        )
    if name.startswith("hub:"):
        return from_keras_hub(name[4:], input_shape=input_shape if None not in input_shape else None, tokens=tokens)
    if name in ALIASES or name in application_names():
        return application(name, input_shape=input_shape, weights=weights)
    raise ValueError(
        f"unknown backbone {name!r}: use one of {list(OWN)}, a keras.applications model "
        f"({', '.join(sorted(ALIASES))}, or a class name such as ResNet50), or hub:<keras-hub preset>."
    )
