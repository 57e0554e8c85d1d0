"""Vision Transformers (Dosovitskiy et al. 2021) built from our own layers.

`ViT` is a functional `keras.Model` (image -> `(B, dim)` features) whose
position embedding is interpolated when the patch grid differs from the
training one, so the same model runs on local crops of another size. Its
parts are reachable for methods that need the token sequence (MAE runs the
blocks on visible patches only):

    tokens = vit.embed_patches(images)        # (B, N, dim), positions added
    features = vit.encode_tokens(tokens)      # (B, 1 + N', dim), class token first

`vit(images) == pool(vit.encode_tokens(vit.embed_patches(images)))`.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_ssl.backbones.relative_positions import RelativePositionBias
from keras_ssl.backbones.transformer import ClassTokenPositionEmbedding, PatchEmbedding, TransformerBlock
from keras_ssl.initializers import vit_preset

# The official codes' `transforms.Normalize` (torchvision's ImageNet statistics).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

layers = keras.layers
__all__ = [
    "ClassTokenPositionEmbedding",
    "PatchEmbedding",
    "RelativePositionBias",
    "TransformerBlock",
    "ViT",
    "vit",
    "vit_base",
    "vit_small",
    "vit_tiny",
]


@keras.saving.register_keras_serializable(package="keras_ssl")
class ViT(keras.Model):
    """Vision Transformer encoder: images in [0, 1] -> `(B, dim)` features.

    A functional model (`image_size x image_size x channels` input) that also
    runs on other image sizes divisible by `patch_size`: the position table
    is interpolated to the new patch grid. Wrong channel counts are rejected.

    Parts, for token-level methods: `patch_embed`, `pos_embed`, `blocks`,
    `norm`; `embed_patches(images, mask=, mask_token=)` -> position-embedded
    patch tokens `(B, N, dim)`, masked patches replaced by a mask token
    (iBOT, SimMIM); `encode_tokens(tokens, attention_mask=)` -> class token
    prepended, blocks and final norm, `(B, 1 + n, dim)`, on all patches or
    a subset of them (MAE, I-JEPA, MSN).

    Args:
        image_size: training image side (sets the position grid).
        patch_size: patch side; must divide `image_size`.
        channels: image channels.
        dim, depth, heads: token size, number of blocks, attention heads.
        mlp_ratio: MLP width as a multiple of `dim`.
        dropout: dropout rate inside the blocks.
        pool: `"cls"` (class token) or `"mean"` (mean of the patch tokens).
        interpolation: resize method of the position table for other sizes (PyTorch's bicubic).
        num_registers: register tokens after the class token (Darcet et al.
            2024; DINOv2 with registers: 4); used in the blocks only.
        layerscale: initial LayerScale of every block (DINOv2: 1e-5); None: none.
        positions: `"learned"` (N(0, 0.02^2), trained), `"sincos"`: the
            fixed 2D sine-cosine table of MAE and I-JEPA, not trained, or
            `"relative"`: no positions on the tokens, and one learned
            `RelativePositionBias` on the attention logits, shared by every
            block (BEiT's shared bias, SimMIM's ViT). It covers grids up to the
            training one, and `encode_tokens` needs full square grids: methods
            that encode a subset of the patches (MAE, I-JEPA, MSN) refuse it.
        class_token: prepend a class token (the default); False: none, as
            I-JEPA's encoder, which then pools by `"mean"` and whose
            `encode_tokens` returns the patch tokens alone.
        drop_path: stochastic depth of the last block (DINO, iBOT, SimMIM
            0.1; DINOv2 0.3); the blocks' rates rise linearly from 0 to it,
            as `torch.linspace(0, rate, depth)` in the official codes.
        drop_path_uniform: every block at `drop_path` (DINOv2's).
        initializer: the official code whose initialisation the weights
            follow (`keras_ssl.initializers.vit_preset`): `"timm"` (DINO,
            iBOT; PyTorch's default patch convolution), `"dinov2"`, `"msn"`,
            `"mae"`, `"ijepa"`, `"beit"` (SimMIM), or `"keras"` (Keras's
            defaults, this class's before the option). Each method declares
            its own as `vit_init`, which the CLI builds.
        pixel_norm: None: the patch embedding sees the [0, 1] pixels; `"imagenet"`: each channel standardised
            first, as the official codes' `transforms.Normalize` (grey images: the channels' averages); or `(mean, std)`.
        name: model name.

    Example:
        >>> encoder = keras_ssl.backbones.ViT(image_size=16, patch_size=4, dim=8, depth=2, heads=2)
        >>> encoder.output_shape
        (None, 8)
        >>> crops = images[:, :8, :8]
        >>> tuple(encoder(crops).shape)  # smaller crops too
        (8, 8)
        >>> tuple(encoder.encode_tokens(encoder.embed_patches(crops)).shape)   # (B, 1 + 2 * 2, dim)
        (8, 5, 8)
        >>> mask = np.zeros((8, 16), "float32"); mask[:, :6] = 1   # the first 6 patches masked
        >>> tokens = encoder.embed_patches(images, mask=mask, mask_token=np.zeros(8, "float32"))
        >>> tuple(encoder.encode_tokens(tokens, attention_mask=mask == 0).shape)
        (8, 17, 8)
        >>> mae = keras_ssl.backbones.ViT(image_size=16, patch_size=4, dim=8, depth=2, heads=2, initializer="mae")
        >>> mae.get_config()["initializer"]   # MAE's official init, saved with the model
        'mae'
    """

    def __init__(
        self,
        image_size=32,
        patch_size=4,
        channels=3,
        dim=192,
        depth=12,
        heads=3,
        mlp_ratio=4.0,
        dropout=0.0,
        pool="cls",
        interpolation="bicubic",
        num_registers=0,
        layerscale=None,
        initializer="timm",
        positions="learned",
        class_token=True,
        drop_path=0.0,
        drop_path_uniform=False,
        pixel_norm=None,
        name="vit",
        **kwargs,
    ):
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"patch_size {patch_size} does not divide image_size {image_size}.")
        if pool not in ("cls", "mean"):
            raise ValueError(f"`pool` must be 'cls' or 'mean', got {pool!r}.")
        if not 0 <= drop_path < 1:  # checked here too: linspace gives a 1-block ViT's block rate 0
            raise ValueError(f"`drop_path` must be in [0, 1), got {drop_path}.")
        if positions not in ("learned", "sincos", "relative"):
            raise ValueError(f"`positions` must be 'learned', 'sincos' or 'relative', got {positions!r}.")
        if positions == "relative" and num_registers:
            raise ValueError("a relative position bias has no entries for register tokens: use num_registers=0.")
        if not class_token and pool != "mean":
            raise ValueError(f"a ViT without a class token pools by 'mean', got pool={pool!r}.")
        if depth < 1 or dim % heads:
            raise ValueError(
                f"need depth >= 1 and `heads` dividing `dim`, got depth={depth}, dim={dim}, heads={heads}."
            )
        self._pixel_stats = stats = _pixel_stats(pixel_norm, channels)
        options = dict(
            image_size=int(image_size),
            patch_size=int(patch_size),
            channels=int(channels),
            dim=int(dim),
            depth=int(depth),
            heads=int(heads),
            mlp_ratio=float(mlp_ratio),
            dropout=float(dropout),
            pool=pool,
            interpolation=interpolation,
            num_registers=int(num_registers),
            layerscale=None if layerscale is None else float(layerscale),
            initializer=initializer,
            positions=positions,
            class_token=bool(class_token),
            drop_path=float(drop_path),
            drop_path_uniform=bool(drop_path_uniform),
            pixel_norm=pixel_norm if stats is None or isinstance(pixel_norm, str) else [v.tolist() for v in stats],
        )
        init = vit_preset(initializer, channels, patch_size, dim, depth)
        inputs = keras.Input((image_size, image_size, channels), name="images")
        patches = PatchEmbedding(patch_size, dim, init["patch_kernel"], init["patch_bias"], name="patch_embed")
        grid = patches(self._standardize(inputs))
        relative = positions == "relative"
        x = ClassTokenPositionEmbedding(
            interpolation,
            num_registers,
            init["token"],
            init["position"],
            "none" if relative else positions,
            class_token,
            name="pos_embed",
        )(grid)
        bias = RelativePositionBias(heads, class_token, name="rel_pos_bias")(grid) if relative else None
        rates = [drop_path] * depth if drop_path_uniform else np.linspace(0.0, drop_path, depth).tolist()
        for i in range(depth):
            block = TransformerBlock(
                dim,
                heads,
                mlp_ratio,
                dropout,
                layerscale,
                init["kernel"],
                init["outputs"][i],
                rates[i],
                name=f"block_{i}",
            )
            x = block(x, attention_bias=bias)
        x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
        outputs = x[:, 0] if pool == "cls" else ops.mean(x[:, int(class_token) + int(num_registers) :], axis=1)
        super().__init__(inputs, outputs, name=name, **kwargs)
        self._options = options
        for key, value in options.items():
            setattr(self, key, value)
        # Any height and width (the positions are interpolated), fixed channels.
        self.input_spec = layers.InputSpec(ndim=4, axes={-1: channels})

    def _standardize(self, images):
        stats = [ops.convert_to_tensor(v, images.dtype) for v in self._pixel_stats or ()]
        return ops.divide(ops.subtract(images, stats[0]), stats[1]) if stats else images

    @property
    def patch_embed(self):
        return self.get_layer("patch_embed")

    @property
    def pos_embed(self):
        return self.get_layer("pos_embed")

    @property
    def blocks(self):
        return [self.get_layer(f"block_{i}") for i in range(self.depth)]

    @property
    def rel_pos_bias(self):
        """The shared `RelativePositionBias` (`positions="relative"`), else None."""
        return self.get_layer("rel_pos_bias") if self.positions == "relative" else None

    @property
    def norm(self):
        return self.get_layer("norm")

    @property
    def grid_size(self):
        """Patches per side of an `image_size` image."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self):
        """Patches of an `image_size` image."""
        return self.grid_size**2

    def embed_patches(self, images, training=False, mask=None, mask_token=None):
        """Images `(B, H, W, C)` -> patch tokens with positions `(B, N, dim)` (no class token).

        Where `mask` `(B, N)` (1 or True: masked, raster order) is set, the
        patch embedding is replaced by `mask_token` (`(dim,)`) before the
        positions are added, so a masked token still knows where it is.
        """
        grid = self.patch_embed(self._standardize(images), training=training)
        if self.positions == "relative" and grid.shape[1] != grid.shape[2]:
            # The tokens do not carry their grid, and `encode_tokens` reads them as a square one.
            raise ValueError(
                f"a ViT with relative positions embeds square patch grids for `encode_tokens`, got "
                f"{grid.shape[1]}x{grid.shape[2]} patches; call the model itself on other shapes."
            )
        if mask is not None:
            if mask_token is None:
                raise ValueError("`mask` needs a `mask_token` to put in the masked places.")
            height, width = grid.shape[1], grid.shape[2]
            m = ops.reshape(ops.cast(mask, grid.dtype), (-1, height, width, 1))
            token = ops.reshape(ops.cast(mask_token, grid.dtype), (1, 1, 1, self.dim))
            grid = grid * (1 - m) + token * m
        return self.pos_embed.patch_tokens(grid)

    def encode_tokens(self, tokens, training=False, attention_mask=None):
        """Patch tokens `(B, n, dim)` -> class token + blocks + norm, `(B, 1 + n, dim)`.

        Registers take part in the blocks and are dropped from the output;
        without a class token the output is `(B, n, dim)`.
        `attention_mask` `(B, n)` bool: the patch tokens that may be attended
        to (the class token and registers always may).
        """
        bias = None
        if self.positions == "relative":
            side = math.isqrt(tokens.shape[1] or 0)
            if not side or side * side != tokens.shape[1]:
                raise ValueError(
                    f"a ViT with relative positions encodes full square patch grids, got {tokens.shape[1]} tokens."
                )
            bias = self.rel_pos_bias.bias(side, side)
        x = self.pos_embed.prepend_class_token(tokens)
        cls = int(self.class_token)
        prefix = cls + self.num_registers
        if attention_mask is not None and prefix:
            keep = ops.ones((ops.shape(tokens)[0], prefix), "bool")
            attention_mask = ops.concatenate([keep, ops.cast(attention_mask, "bool")], axis=1)
        for block in self.blocks:
            x = block(x, training=training, attention_mask=attention_mask, attention_bias=bias)
        x = self.norm(x)
        if self.num_registers:
            x = ops.concatenate([x[:, :1], x[:, prefix:]], axis=1) if cls else x[:, prefix:]
        return x

    def layer_decay_multipliers(self, decay, patch_embed_multiplier=1.0, embeddings=()):
        """Layer-wise rate decay (BEiT, DINOv2), as an optimiser's `lr_multipliers`: `{path: factor}`.

        DINOv2's `get_params_groups_with_decay`: block `i` of `depth` learns at
        `decay ** (depth - i)` times the rate; the patch embedding, class token
        and positions (and `embeddings`, e.g. a method's mask token) at
        `decay ** (depth + 1)`, the patch embedding times
        `patch_embed_multiplier` too; the final norm, the registers (which
        DINOv2's rule places in no layer) and everything outside the encoder at
        the full rate (not listed).

        Args:
            decay: the per-block factor in (0, 1] (DINOv2 0.9).
            patch_embed_multiplier: the patch embedding's extra factor (DINOv2 0.2).
            embeddings: other variables placed with the embeddings.

        Example:
            >>> encoder = keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=8, depth=2, heads=2)
            >>> m = encoder.layer_decay_multipliers(0.5, patch_embed_multiplier=0.2)
            >>> m["patch_embed"], m["pos_embed/positions"], m["block_0"], m["block_1"], "norm" in m
            (0.025, 0.125, 0.25, 0.5, False)
            >>> optimizer = keras_ssl.optimizers.Adam(1e-3, lr_multipliers=m)
        """
        if not 0 < decay <= 1 or patch_embed_multiplier < 0:
            raise ValueError(
                f"Need 0 < decay <= 1 and patch_embed_multiplier >= 0, got {decay}, {patch_embed_multiplier}."
            )
        # Layer names, not their weights' full paths: a reloaded model renames the layers inside them.
        bottom = decay ** (self.depth + 1)
        multipliers = {"patch_embed": bottom * patch_embed_multiplier}
        registers = getattr(self.pos_embed, "registers", None)
        multipliers |= {w.path: bottom for w in self.pos_embed.weights if w is not registers}
        multipliers |= {w.path: bottom for w in embeddings}
        multipliers |= {f"block_{i}": decay ** (self.depth - i) for i in range(self.depth)}
        return {k: float(v) for k, v in multipliers.items()}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self._options}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def _pixel_stats(pixel_norm, channels):
    """`ViT`'s `pixel_norm` -> `(mean, std)` float32 arrays of `channels` entries, or None."""
    if pixel_norm is None:
        return None
    stats = pixel_norm
    if isinstance(pixel_norm, str) and pixel_norm == "imagenet":  # grey images: the channels' averages
        stats = (IMAGENET_MEAN, IMAGENET_STD) if channels != 1 else ([np.mean(IMAGENET_MEAN)], [np.mean(IMAGENET_STD)])
    if isinstance(stats, str) or len(stats) != 2 or any(np.size(v) != channels for v in stats) or np.min(stats[1]) <= 0:
        raise ValueError(
            f"`pixel_norm`: None, 'imagenet' or ({channels} means, {channels} stds > 0); got {pixel_norm!r}."
        )
    return tuple(np.asarray(v, "float32").reshape(-1) for v in stats)


def vit(image_size=32, patch_size=4, dim=192, depth=12, heads=3, channels=3, **kwargs):
    """A custom-size `ViT` (see `ViT` for the other options).

    Example:
        >>> encoder = keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=8, depth=2, heads=2)
        >>> encoder.output_shape, len(encoder.blocks)
        ((None, 8), 2)
    """
    return ViT(
        image_size=image_size, patch_size=patch_size, channels=channels, dim=dim, depth=depth, heads=heads, **kwargs
    )


def vit_tiny(image_size=32, patch_size=4, channels=3, **kwargs):
    """ViT-Tiny: dim 192, depth 12, 3 heads.

    Example:
        >>> encoder = keras_ssl.backbones.vit_tiny(image_size=16, patch_size=4)
        >>> encoder.name, encoder.output_shape, len(encoder.blocks)
        ('vit_tiny', (None, 192), 12)
    """
    kwargs.setdefault("name", "vit_tiny")
    return vit(image_size, patch_size, 192, 12, 3, channels, **kwargs)


def vit_small(image_size=32, patch_size=4, channels=3, **kwargs):
    """ViT-Small: dim 384, depth 12, 6 heads.

    Example:
        >>> encoder = keras_ssl.backbones.vit_small(image_size=16, patch_size=4)
        >>> encoder.name, encoder.output_shape, len(encoder.blocks)
        ('vit_small', (None, 384), 12)
    """
    kwargs.setdefault("name", "vit_small")
    return vit(image_size, patch_size, 384, 12, 6, channels, **kwargs)


def vit_base(image_size=224, patch_size=16, channels=3, **kwargs):
    """ViT-Base: dim 768, depth 12, 12 heads.

    Example:
        >>> encoder = keras_ssl.backbones.vit_base(image_size=32, patch_size=16)
        >>> encoder.name, encoder.output_shape, len(encoder.blocks)
        ('vit_base', (None, 768), 12)
    """
    kwargs.setdefault("name", "vit_base")
    return vit(image_size, patch_size, 768, 12, 12, channels, **kwargs)
