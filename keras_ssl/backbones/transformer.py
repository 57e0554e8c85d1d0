"""The Vision Transformer's layers: patch embedding, class token and positions (with registers),
and the pre-norm Transformer block (with LayerScale and attention masks)."""

import keras
import numpy as np
from keras import ops

from keras_ssl.backbones.position_resize import resize_positions
from keras_ssl.initializers import fresh, serialize, trunc_normal

layers = keras.layers


def _loaded(initializer):
    """An initialiser option as given, its config (from a saved layer) as the initialiser."""
    return keras.initializers.get(initializer) if isinstance(initializer, dict) else initializer


def _large_negative(dtype):
    # Finite, so a row with every key masked stays a number; 0.7 of the largest float16 or float32.
    return -0.7 * (65504.0 if keras.backend.standardize_dtype(dtype) == "float16" else 3.4e38)


def drop_paths(branch, rate, seed_generator, training):
    """Stochastic depth (timm's `DropPath`): each sample's `branch` is zeroed with probability `rate`.

    Kept samples are scaled by `1 / (1 - rate)`, so the expectation is
    `branch`. Outside training, or at rate 0, `branch` is returned as is.

    Args:
        branch: `(B, ...)` residual branch output.
        rate: drop probability in [0, 1).
        seed_generator: a `keras.random.SeedGenerator` for the coins.
        training: whether to drop.

    Example:
        >>> from keras_ssl.backbones.transformer import drop_paths
        >>> out = drop_paths(ops.ones((1000, 2, 4)), 0.25, keras.random.SeedGenerator(0), training=True)
        >>> sorted({round(float(v), 4) for v in np.unique(ops.convert_to_numpy(out))})
        [0.0, 1.3333]
    """
    if not (training and rate):
        return branch
    keep = 1.0 - rate
    shape = (ops.shape(branch)[0],) + (1,) * (len(branch.shape) - 1)
    coins = keras.random.uniform(shape, seed=seed_generator)
    return branch * ops.cast(coins < keep, branch.dtype) / keep


def sincos_positions(dim, grid_size):
    """Fixed 2D sine-cosine position table `(N, dim)` float32, patches in raster order.

    The first half of the features encodes a patch's column, the second its row (the
    official `get_2d_sincos_pos_embed` puts the width coordinate first); each half is
    `[sin(p * w_k), cos(p * w_k)]` with frequencies `w_k = 10000 ** (-k / (dim / 4))`.

    Args:
        dim: feature size, a multiple of 4.
        grid_size: patches per side, or `(height, width)`.

    Example:
        >>> from keras_ssl.backbones.transformer import sincos_positions
        >>> table = sincos_positions(8, 4)
        >>> table.shape, table[0].tolist()   # patch (0, 0): sines 0, cosines 1
        ((16, 8), [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    """
    if dim % 4:
        raise ValueError(f"sine-cosine positions need `dim` divisible by 4, got {dim}.")
    height, width = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    rows, cols = np.divmod(np.arange(height * width, dtype=np.float64), width)
    freqs = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))

    def encode(position):
        angles = position[:, None] * freqs[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([encode(cols), encode(rows)], axis=1).astype("float32")


@keras.saving.register_keras_serializable(package="keras_ssl")
class PatchEmbedding(layers.Layer):
    """Non-overlapping patches projected to `dim` (a strided convolution).

    Args:
        patch_size: side of the square patches; must divide the image sides.
        dim: embedding size.
        kernel_initializer, bias_initializer: the convolution's (Keras's defaults; `ViT` sets its preset's).

    Example:
        >>> from keras_ssl.backbones.transformer import PatchEmbedding
        >>> tuple(PatchEmbedding(4, 8)(images).shape)   # (B, H / 4, W / 4, dim)
        (8, 4, 4, 8)
    """

    def __init__(self, patch_size, dim, kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.dim = int(dim)
        self.kernel_initializer, self.bias_initializer = _loaded(kernel_initializer), _loaded(bias_initializer)
        self.projection = layers.Conv2D(
            self.dim,
            self.patch_size,
            strides=self.patch_size,
            kernel_initializer=fresh(self.kernel_initializer),
            bias_initializer=fresh(self.bias_initializer),
        )

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
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "dim": self.dim,
            "kernel_initializer": serialize(self.kernel_initializer),
            "bias_initializer": serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="keras_ssl")
class ClassTokenPositionEmbedding(layers.Layer):
    """Adds positions to a patch grid and prepends a class token (and registers).

    The position table is made for the grid seen at build time; another grid
    (a crop of another size) gets the table resized with `interpolation`.
    Register tokens (Darcet et al. 2024) follow the class token, without
    positions, as in DINOv2.

    Args:
        interpolation: resize method for other grid sizes: `"bicubic"`, `"bilinear"`
            or `"nearest"` as PyTorch's `F.interpolate` on every backend
            (`position_resize.resize_positions`), or another `ops.image.resize` method.
        num_registers: learned register tokens inserted after the class token.
        token_initializer: of the class token and registers; None: N(0, 0.02^2).
        position_initializer: of learned positions (the class token's too); None: N(0, 0.02^2).
        positions: `"learned"`, `"sincos"`: MAE's and I-JEPA's fixed table
            (`sincos_positions`, the class token's position 0), not trained,
            or `"none"`: no positions (SimMIM's ViT, whose blocks get a
            `RelativePositionBias` instead).
        class_token: prepend a class token; False: registers and patches only
            (I-JEPA's encoder).

    Example:
        >>> from keras_ssl.backbones.transformer import ClassTokenPositionEmbedding
        >>> layer = ClassTokenPositionEmbedding()
        >>> tuple(layer(ops.zeros((2, 4, 4, 8))).shape)   # (B, 1 + 4 * 4, dim)
        (2, 17, 8)
        >>> tuple(layer(ops.zeros((2, 2, 2, 8))).shape)   # another grid: positions interpolated
        (2, 5, 8)
        >>> fixed = ClassTokenPositionEmbedding(positions="sincos")
        >>> _ = fixed(ops.zeros((2, 4, 4, 8)))
        >>> len(fixed.trainable_weights)   # the class token only
        1
    """

    def __init__(
        self,
        interpolation="bicubic",
        num_registers=0,
        token_initializer=None,
        position_initializer=None,
        positions="learned",
        class_token=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_registers) != num_registers or num_registers < 0:
            raise ValueError(f"`num_registers` must be an integer >= 0, got {num_registers}.")
        if positions not in ("learned", "sincos", "none"):
            raise ValueError(f"`positions` must be 'learned', 'sincos' or 'none', got {positions!r}.")
        self.position_type = positions
        self.use_class_token = bool(class_token)
        self.interpolation = interpolation
        self.num_registers = int(num_registers)
        self.token_initializer, self.position_initializer = _loaded(token_initializer), _loaded(position_initializer)

    def build(self, input_shape):
        _, self.grid_height, self.grid_width, dim = input_shape

        def add(name, shape, initializer, trainable=True):
            initializer = trunc_normal() if initializer is None else fresh(initializer)
            return self.add_weight(name=name, shape=shape, initializer=initializer, trainable=trainable)

        fixed = self.position_type == "sincos"
        if self.use_class_token:
            self.class_token = add("class_token", (1, 1, dim), self.token_initializer)
            if self.position_type != "none":
                position = "zeros" if fixed else self.position_initializer
                self.class_position = add("class_position", (1, 1, dim), position, trainable=not fixed)
        shape = (1, self.grid_height, self.grid_width, dim)
        if fixed:
            # A weight, not a constant, so checkpoints and targets' copies keep the same structure.
            self.positions = add("positions", shape, "zeros", trainable=False)
            self.positions.assign(sincos_positions(dim, (self.grid_height, self.grid_width)).reshape(shape))
        elif self.position_type == "learned":
            self.positions = add("positions", shape, self.position_initializer)
        if self.num_registers:
            self.registers = add("registers", (1, self.num_registers, dim), self.token_initializer)

    def patch_positions(self, height, width):
        """The `(1, height * width, dim)` patch positions for a grid of that size."""
        positions = ops.convert_to_tensor(self.positions)
        if (height, width) != (self.grid_height, self.grid_width):
            positions = resize_positions(positions, height, width, self.interpolation)
        return ops.reshape(positions, (1, height * width, positions.shape[-1]))

    def patch_tokens(self, grid):
        """`(B, h, w, dim)` patch grid -> `(B, h * w, dim)` tokens with positions."""
        height, width = grid.shape[1], grid.shape[2]
        if height is None or width is None:
            raise ValueError("the patch grid needs a static height and width.")
        tokens = ops.reshape(grid, (-1, height * width, grid.shape[-1]))
        if self.position_type == "none":
            return tokens
        return tokens + ops.cast(self.patch_positions(height, width), grid.dtype)

    def prepend_class_token(self, tokens):
        """`(B, n, dim)` -> `(B, 1 + registers + n, dim)`: class token (with its position), registers, tokens.

        Without a class token, `(B, registers + n, dim)`.
        """
        batch, dim = ops.shape(tokens)[0], tokens.shape[-1]
        prefix = []
        if self.use_class_token:
            token = self.class_token if self.position_type == "none" else self.class_token + self.class_position
            token = ops.cast(token, tokens.dtype)
            prefix.append(ops.broadcast_to(token, (batch, 1, dim)))
        if self.num_registers:
            registers = ops.cast(self.registers, tokens.dtype)
            prefix.append(ops.broadcast_to(registers, (batch, self.num_registers, dim)))
        return ops.concatenate([*prefix, tokens], axis=1) if prefix else tokens

    def call(self, grid):
        return self.prepend_class_token(self.patch_tokens(grid))

    def compute_output_shape(self, input_shape):
        b, h, w, d = input_shape
        prefix = int(self.use_class_token) + self.num_registers
        return (b, None if h is None or w is None else prefix + h * w, d)

    def get_config(self):
        return {
            **super().get_config(),
            "interpolation": self.interpolation,
            "num_registers": self.num_registers,
            "token_initializer": serialize(self.token_initializer),
            "position_initializer": serialize(self.position_initializer),
            "positions": self.position_type,
            "class_token": self.use_class_token,
        }


@keras.saving.register_keras_serializable(package="keras_ssl")
class TransformerBlock(layers.Layer):
    """Pre-norm Transformer block: `x + MHSA(LN(x))`, then `x + MLP(LN(x))`.

    Args:
        dim: token size.
        heads: attention heads (must divide `dim`).
        mlp_ratio: MLP hidden size as a multiple of `dim`.
        dropout: dropout rate after attention and in the MLP.
        layerscale: initial value of the learned per-channel scales of both
            branches (CaiT's LayerScale; DINOv2: 1e-5); None: no scales.
        kernel_initializer: of the Dense kernels (biases start at 0).
        output_initializer: of the attention output and second MLP kernels,
            whose outputs join the residual stream (BEiT and I-JEPA draw them
            smaller in deeper blocks); None: `kernel_initializer`.
        drop_path: stochastic depth (timm's `DropPath`): in training, each
            sample's branch output is dropped with this probability and kept
            ones are scaled by `1 / (1 - drop_path)`; both branches drawn apart.
        seed: seed of the drop-path coins (a `keras.random.SeedGenerator`).

    Call arguments: `x` `(B, T, dim)`; `attention_mask`, optional `(B, T)`
    bool, the tokens that may be attended to (masked-out tokens still get
    an output, computed from the others); `attention_bias`, optional, added
    to the attention logits, broadcast to `(B, heads, T, T)` (a
    `RelativePositionBias`).

    Example:
        >>> from keras_ssl.backbones.transformer import TransformerBlock
        >>> tuple(TransformerBlock(8, heads=2, layerscale=1e-5)(ops.zeros((2, 17, 8))).shape)
        (2, 17, 8)
    """

    def __init__(
        self,
        dim,
        heads,
        mlp_ratio=4.0,
        dropout=0.0,
        layerscale=None,
        kernel_initializer="glorot_uniform",
        output_initializer=None,
        drop_path=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"`heads` ({heads}) must divide `dim` ({dim}).")
        if not 0 <= drop_path < 1:
            raise ValueError(f"`drop_path` must be in [0, 1), got {drop_path}.")
        self.drop_path, self.seed = float(drop_path), seed
        if self.drop_path:  # only then: blocks without it keep the seed generators they always had
            self.seed_generator = keras.random.SeedGenerator(seed)
        if layerscale is not None and not layerscale > 0:
            raise ValueError(f"`layerscale` must be > 0 or None, got {layerscale}.")
        self.dim, self.heads = int(dim), int(heads)
        self.mlp_ratio, self.dropout = float(mlp_ratio), float(dropout)
        self.layerscale = None if layerscale is None else float(layerscale)
        self.kernel_initializer, self.output_initializer = _loaded(kernel_initializer), _loaded(output_initializer)
        inner = self.kernel_initializer
        outer = inner if self.output_initializer is None else self.output_initializer
        self.norm1 = layers.LayerNormalization(epsilon=1e-6)
        self.qkv = layers.Dense(3 * self.dim, kernel_initializer=fresh(inner))
        self.proj = layers.Dense(self.dim, kernel_initializer=fresh(outer))
        self.norm2 = layers.LayerNormalization(epsilon=1e-6)
        self.fc1 = layers.Dense(int(self.dim * self.mlp_ratio), activation="gelu", kernel_initializer=fresh(inner))
        self.fc2 = layers.Dense(self.dim, kernel_initializer=fresh(outer))
        self.drop = layers.Dropout(self.dropout)

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.qkv.build(input_shape)
        self.proj.build(input_shape)
        self.norm2.build(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build(input_shape[:-1] + (self.fc1.units,))
        if self.layerscale is not None:
            scale = dict(shape=(self.dim,), initializer=keras.initializers.Constant(self.layerscale))
            self.gamma1 = self.add_weight(name="gamma1", **scale)
            self.gamma2 = self.add_weight(name="gamma2", **scale)

    def attention(self, x, attention_mask=None, attention_bias=None):
        n = x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(x), (-1, n, 3, self.heads, self.dim // self.heads))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        mask = bias = None
        if attention_mask is not None:
            mask = ops.cast(attention_mask, "bool")[:, None, None, :]  # (B, heads, queries, keys)
        if attention_bias is not None:
            bias = ops.cast(attention_bias, q.dtype)
            if mask is not None:  # PyTorch's kernel takes one of the two: the mask joins the bias
                bias, mask = ops.where(mask, bias, ops.cast(_large_negative(q.dtype), q.dtype)), None
        out = ops.dot_product_attention(q, k, v, bias=bias, mask=mask)  # (B, n, heads, head_dim)
        return self.proj(ops.reshape(out, (-1, n, self.dim)))

    def _scaled(self, branch, gamma):
        return branch if self.layerscale is None else branch * ops.cast(gamma, branch.dtype)

    def _dropped(self, branch, training):
        # Read at call time: a momentum target sets it to 0 (the official teachers have no drop path).
        return drop_paths(branch, self.drop_path, getattr(self, "seed_generator", None), training)

    def call(self, x, training=False, attention_mask=None, attention_bias=None):
        attended = self.drop(self.attention(self.norm1(x), attention_mask, attention_bias), training=training)
        x = x + self._dropped(self._scaled(attended, getattr(self, "gamma1", None)), training)
        h = self.drop(self.fc1(self.norm2(x)), training=training)
        mlp = self._scaled(self.drop(self.fc2(h), training=training), getattr(self, "gamma2", None))
        return x + self._dropped(mlp, training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "heads": self.heads,
            "mlp_ratio": self.mlp_ratio,
            "dropout": self.dropout,
            "layerscale": self.layerscale,
            "kernel_initializer": serialize(self.kernel_initializer),
            "output_initializer": serialize(self.output_initializer),
            "drop_path": self.drop_path,
            "seed": self.seed,
        }
