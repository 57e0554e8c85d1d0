"""MAE's light decoder (He et al. 2022): mask tokens in the masked places, then pixels per patch."""

import math

import keras
import numpy as np
from keras import ops

from keras_ssl.backbones.transformer import TransformerBlock, sincos_positions
from keras_ssl.initializers import trunc_normal
from keras_ssl.layers.masking import take_tokens


@keras.saving.register_keras_serializable(package="keras_ssl")
class MAEDecoder(keras.layers.Layer):
    """MAE's light decoder: mask tokens fill the masked places, then pixels per patch.

    Args:
        num_patches: `N`, patches of a full (square) image.
        patch_dim: pixels per patch, `p * p * C`.
        dim, depth, heads: decoder token size, blocks, attention heads.
        mlp_ratio: the blocks' MLP width over `dim` (models_mae.py: the encoder's).
        positions: `"sincos"`, MAE's fixed 2D sine-cosine table (the class
            token's position 0), not trained; or `"learned"`, N(0, 0.02^2).

    Example:
        >>> from keras_ssl.backbones.decoders import MAEDecoder
        >>> decoder = MAEDecoder(16, 48, dim=16, depth=1, heads=2)   # 16x16 images: 16 patches of 4x4x3
        >>> latent = ops.zeros((8, 1 + 4, 32))   # the encoder's class token and 4 visible tokens
        >>> ids_restore = ops.tile(ops.arange(16)[None], (8, 1))
        >>> tuple(decoder(latent, ids_restore).shape)   # pixels of every patch
        (8, 16, 48)
        >>> len(decoder.non_trainable_weights)   # the fixed positions
        1
    """

    def __init__(self, num_patches, patch_dim, dim=128, depth=2, heads=4, positions="sincos", mlp_ratio=4.0, **kwargs):
        super().__init__(**kwargs)
        if positions not in ("learned", "sincos"):
            raise ValueError(f"`positions` must be 'learned' or 'sincos', got {positions!r}.")
        self.num_patches, self.patch_dim = int(num_patches), int(patch_dim)
        self.position_type = positions
        self.grid_size = math.isqrt(self.num_patches)
        if positions == "sincos" and self.grid_size**2 != self.num_patches:
            raise ValueError(f"sine-cosine positions need a square patch grid, got {num_patches} patches.")
        self.dim, self.depth, self.heads, self.mlp_ratio = int(dim), int(depth), int(heads), float(mlp_ratio)
        self.embed = keras.layers.Dense(self.dim)
        self.blocks = [TransformerBlock(self.dim, self.heads, self.mlp_ratio) for _ in range(self.depth)]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.head = keras.layers.Dense(self.patch_dim)

    def build(self, latent_shape):
        self.embed.build(latent_shape)
        self.mask_token = self.add_weight(name="mask_token", shape=(1, 1, self.dim), initializer=trunc_normal())
        fixed = self.position_type == "sincos"
        self.positions = self.add_weight(
            name="positions",
            shape=(1, 1 + self.num_patches, self.dim),
            initializer="zeros" if fixed else trunc_normal(),
            trainable=not fixed,
        )
        if fixed:  # models_mae.py: get_2d_sincos_pos_embed(..., cls_token=True), requires_grad=False
            table = sincos_positions(self.dim, self.grid_size)
            self.positions.assign(np.concatenate([np.zeros((1, self.dim), "float32"), table])[None])
        tokens = (None, 1 + self.num_patches, self.dim)
        for block in self.blocks:
            block.build(tokens)
        self.norm.build(tokens)
        self.head.build(tokens)

    def call(self, latent, ids_restore, training=False):
        """`latent` `(B, 1 + n, D_enc)`, class token first; `ids_restore` `(B, N)`.

        Returns the pixel predictions `(B, N, patch_dim)` of every patch.
        """
        x = self.embed(latent)
        masked = ops.broadcast_to(
            ops.cast(self.mask_token, x.dtype),
            (ops.shape(x)[0], self.num_patches - (x.shape[1] - 1), self.dim),
        )
        patches = take_tokens(ops.concatenate([x[:, 1:], masked], axis=1), ids_restore)
        x = ops.concatenate([x[:, :1], patches], axis=1) + ops.cast(self.positions, x.dtype)
        for block in self.blocks:
            x = block(x, training=training)
        return self.head(self.norm(x))[:, 1:]

    def get_config(self):
        return {
            **super().get_config(),
            "num_patches": self.num_patches,
            "patch_dim": self.patch_dim,
            "dim": self.dim,
            "depth": self.depth,
            "heads": self.heads,
            "positions": self.position_type,
            "mlp_ratio": self.mlp_ratio,
        }
