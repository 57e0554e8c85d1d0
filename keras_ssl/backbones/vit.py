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

import keras
from keras import ops

layers = keras.layers
_INIT = keras.initializers.TruncatedNormal(stddev=0.02)


@keras.saving.register_keras_serializable(package="keras_ssl")
class PatchEmbedding(layers.Layer):
    """Non-overlapping patches projected to `dim` (a strided convolution).

    Args:
        patch_size: side of the square patches; must divide the image sides.
        dim: embedding size.

    Example:
        >>> from keras_ssl.backbones.vit import PatchEmbedding
        >>> tuple(PatchEmbedding(4, 8)(images).shape)   # (B, H / 4, W / 4, dim)
        (8, 4, 4, 8)
    """

    def __init__(self, patch_size, dim, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.dim = int(dim)
        self.projection = layers.Conv2D(self.dim, self.patch_size, strides=self.patch_size)

    def build(self, input_shape):
        self.projection.build(input_shape)

    def call(self, images):
        height, width = images.shape[1], images.shape[2]
        p = self.patch_size
        if height is not None and width is not None and (height % p or width % p):
            # A "valid" strided conv would silently drop the border pixels.
            raise ValueError(f"patch_size {self.patch_size} does not divide the image size {height}x{width}.")
        return self.projection(images)

    def compute_output_shape(self, input_shape):
        grid = [None if s is None else s // self.patch_size for s in input_shape[1:3]]
        return (input_shape[0], *grid, self.dim)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size, "dim": self.dim}


@keras.saving.register_keras_serializable(package="keras_ssl")
class ClassTokenPositionEmbedding(layers.Layer):
    """Adds learned positions to a patch grid and prepends a class token.

    The position table is made for the grid seen at build time; another grid
    (a crop of another size) gets the table resized with `interpolation`.

    Args:
        interpolation: `ops.image.resize` method for other grid sizes.

    Example:
        >>> from keras_ssl.backbones.vit import ClassTokenPositionEmbedding
        >>> layer = ClassTokenPositionEmbedding()
        >>> tuple(layer(ops.zeros((2, 4, 4, 8))).shape)   # (B, 1 + 4 * 4, dim)
        (2, 17, 8)
        >>> tuple(layer(ops.zeros((2, 2, 2, 8))).shape)   # another grid: positions interpolated
        (2, 5, 8)
    """

    def __init__(self, interpolation="bicubic", **kwargs):
        super().__init__(**kwargs)
        self.interpolation = interpolation

    def build(self, input_shape):
        _, self.grid_height, self.grid_width, dim = input_shape
        token = dict(shape=(1, 1, dim), initializer=_INIT)
        self.class_token = self.add_weight(name="class_token", **token)
        self.class_position = self.add_weight(name="class_position", **token)
        self.positions = self.add_weight(
            name="positions", shape=(1, self.grid_height, self.grid_width, dim), initializer=_INIT
        )

    def patch_positions(self, height, width):
        """The `(1, height * width, dim)` patch positions for a grid of that size."""
        positions = ops.convert_to_tensor(self.positions)
        if (height, width) != (self.grid_height, self.grid_width):
            positions = ops.image.resize(positions, (height, width), interpolation=self.interpolation)
        return ops.reshape(positions, (1, height * width, positions.shape[-1]))

    def patch_tokens(self, grid):
        """`(B, h, w, dim)` patch grid -> `(B, h * w, dim)` tokens with positions."""
        height, width = grid.shape[1], grid.shape[2]
        if height is None or width is None:
            raise ValueError("the patch grid needs a static height and width.")
        positions = ops.cast(self.patch_positions(height, width), grid.dtype)
        return ops.reshape(grid, (-1, height * width, grid.shape[-1])) + positions

    def prepend_class_token(self, tokens):
        """`(B, n, dim)` -> `(B, 1 + n, dim)` with the class token (and its position) first."""
        cls = ops.cast(self.class_token + self.class_position, tokens.dtype)
        cls = ops.broadcast_to(cls, (ops.shape(tokens)[0], 1, tokens.shape[-1]))
        return ops.concatenate([cls, tokens], axis=1)

    def call(self, grid):
        return self.prepend_class_token(self.patch_tokens(grid))

    def compute_output_shape(self, input_shape):
        b, h, w, d = input_shape
        return (b, None if h is None or w is None else 1 + h * w, d)

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}


@keras.saving.register_keras_serializable(package="keras_ssl")
class TransformerBlock(layers.Layer):
    """Pre-norm Transformer block: `x + MHSA(LN(x))`, then `x + MLP(LN(x))`.

    Args:
        dim: token size.
        heads: attention heads (must divide `dim`).
        mlp_ratio: MLP hidden size as a multiple of `dim`.
        dropout: dropout rate after attention and in the MLP.

    Example:
        >>> from keras_ssl.backbones.vit import TransformerBlock
        >>> tuple(TransformerBlock(8, heads=2)(ops.zeros((2, 17, 8))).shape)
        (2, 17, 8)
    """

    def __init__(self, dim, heads, mlp_ratio=4.0, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"`heads` ({heads}) must divide `dim` ({dim}).")
        self.dim, self.heads = int(dim), int(heads)
        self.mlp_ratio, self.dropout = float(mlp_ratio), float(dropout)
        self.norm1 = layers.LayerNormalization(epsilon=1e-6)
        self.qkv = layers.Dense(3 * self.dim)
        self.proj = layers.Dense(self.dim)
        self.norm2 = layers.LayerNormalization(epsilon=1e-6)
        self.fc1 = layers.Dense(int(self.dim * self.mlp_ratio), activation="gelu")
        self.fc2 = layers.Dense(self.dim)
        self.drop = layers.Dropout(self.dropout)

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.qkv.build(input_shape)
        self.proj.build(input_shape)
        self.norm2.build(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build(input_shape[:-1] + (self.fc1.units,))

    def attention(self, x):
        n = x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(x), (-1, n, 3, self.heads, self.dim // self.heads))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        out = ops.dot_product_attention(q, k, v)  # (B, n, heads, head_dim)
        return self.proj(ops.reshape(out, (-1, n, self.dim)))

    def call(self, x, training=False):
        x = x + self.drop(self.attention(self.norm1(x)), training=training)
        h = self.drop(self.fc1(self.norm2(x)), training=training)
        return x + self.drop(self.fc2(h), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "heads": self.heads,
            "mlp_ratio": self.mlp_ratio,
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="keras_ssl")
class ViT(keras.Model):
    """Vision Transformer encoder: images in [0, 1] -> `(B, dim)` features.

    A functional model (`image_size x image_size x channels` input) that also
    runs on other image sizes divisible by `patch_size`: the position table
    is interpolated to the new patch grid. Wrong channel counts are rejected.

    Parts, for token-level methods (MAE): `patch_embed`, `pos_embed`,
    `blocks`, `norm`; `embed_patches(images)` -> position-embedded patch
    tokens `(B, N, dim)`, `encode_tokens(tokens)` -> class token prepended,
    blocks and final norm, `(B, 1 + n, dim)`.

    Args:
        image_size: training image side (sets the position grid).
        patch_size: patch side; must divide `image_size`.
        channels: image channels.
        dim, depth, heads: token size, number of blocks, attention heads.
        mlp_ratio: MLP width as a multiple of `dim`.
        dropout: dropout rate inside the blocks.
        pool: `"cls"` (class token) or `"mean"` (mean of the patch tokens).
        interpolation: resize method of the position table for other sizes.
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
        name="vit",
        **kwargs,
    ):
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(f"patch_size {patch_size} does not divide image_size {image_size}.")
        if pool not in ("cls", "mean"):
            raise ValueError(f"`pool` must be 'cls' or 'mean', got {pool!r}.")
        if depth < 1 or dim % heads:
            raise ValueError(
                f"need depth >= 1 and `heads` dividing `dim`, got depth={depth}, dim={dim}, heads={heads}."
            )
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
        )
        inputs = keras.Input((image_size, image_size, channels), name="images")
        grid = PatchEmbedding(patch_size, dim, name="patch_embed")(inputs)
        x = ClassTokenPositionEmbedding(interpolation, name="pos_embed")(grid)
        for i in range(depth):
            x = TransformerBlock(dim, heads, mlp_ratio, dropout, name=f"block_{i}")(x)
        x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
        outputs = x[:, 0] if pool == "cls" else ops.mean(x[:, 1:], axis=1)
        super().__init__(inputs, outputs, name=name, **kwargs)
        self._options = options
        for key, value in options.items():
            setattr(self, key, value)
        # Any height and width (the positions are interpolated), fixed channels.
        self.input_spec = layers.InputSpec(ndim=4, axes={-1: channels})

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
    def norm(self):
        return self.get_layer("norm")

    def embed_patches(self, images, training=False):
        """Images `(B, H, W, C)` -> patch tokens with positions `(B, N, dim)` (no class token)."""
        return self.pos_embed.patch_tokens(self.patch_embed(images, training=training))

    def encode_tokens(self, tokens, training=False):
        """Patch tokens `(B, n, dim)` -> class token + blocks + norm, `(B, 1 + n, dim)`."""
        x = self.pos_embed.prepend_class_token(tokens)
        for block in self.blocks:
            x = block(x, training=training)
        return self.norm(x)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self._options}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


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
