"""A small text Transformer: token and position embeddings, pre-norm blocks, pooled to `(B, dim)`."""

import keras
import numpy as np
from keras import ops

from keras_ssl.text.tokenizer import PAD


@keras.saving.register_keras_serializable(package="keras_ssl")
class TextBlock(keras.layers.Layer):
    """Pre-norm Transformer block over tokens with a boolean attention mask.

    Args:
        dim: token size.
        heads: attention heads (must divide `dim`).
        mlp_ratio: MLP width as a multiple of `dim`.

    Example:
        >>> from keras_ssl.text import TextBlock
        >>> block = TextBlock(32, heads=4)
        >>> x = np.random.default_rng(0).normal(size=(2, 5, 32)).astype("float32")  # (B, L, 32)
        >>> mask = np.tril(np.ones((2, 5, 5), bool))  # (B, L, L) bool: query i sees key j (here j <= i)
        >>> tuple(block(x, mask).shape)
        (2, 5, 32)
    """

    def __init__(self, dim, heads, mlp_ratio=4.0, **kwargs):
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"`heads` ({heads}) must divide `dim` ({dim}).")
        self.dim, self.heads, self.mlp_ratio = int(dim), int(heads), float(mlp_ratio)
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-5)
        self.qkv = keras.layers.Dense(3 * self.dim)
        self.proj = keras.layers.Dense(self.dim)
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-5)
        self.fc1 = keras.layers.Dense(int(self.dim * self.mlp_ratio), activation="gelu")
        self.fc2 = keras.layers.Dense(self.dim)

    def build(self, input_shape):
        for layer in (self.norm1, self.qkv, self.proj, self.norm2, self.fc1):
            layer.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.fc1.units,))

    def call(self, x, mask):
        length, head_dim = x.shape[1], self.dim // self.heads
        qkv = ops.reshape(self.qkv(self.norm1(x)), (-1, length, 3, self.heads, head_dim))
        q, k, v = ops.split(qkv, 3, axis=2)
        logits = ops.einsum("bqhd,bkhd->bhqk", q[:, :, 0], k[:, :, 0]) / np.sqrt(head_dim)
        logits = ops.cast(logits, "float32")
        # ops.where, not an additive large negative: that overflows float16 (PITFALLS)
        logits = ops.where(ops.expand_dims(mask, 1), logits, ops.full_like(logits, -np.inf))
        attn = ops.cast(ops.softmax(logits, axis=-1), x.dtype)
        out = ops.reshape(ops.einsum("bhqk,bkhd->bqhd", attn, v[:, :, 0]), (-1, length, self.dim))
        x = x + self.proj(out)
        return x + self.fc2(self.fc1(self.norm2(x)))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "mlp_ratio": self.mlp_ratio}


@keras.saving.register_keras_serializable(package="keras_ssl")
class TextTransformer(keras.Model):
    """Small text Transformer mapping token ids `(B, L)` to features `(B, dim)`.

    Token and learned position embeddings, `depth` pre-norm blocks, a final
    LayerNorm. Padding (id 0) is never attended to. `pooling="eos"` (CLIP)
    takes the features of the last non-pad token, which with `causal=True`
    have seen the whole text; `pooling="mean"` averages non-pad tokens.

    Args:
        vocab_size: number of token ids.
        max_length: longest id sequence.
        dim: token width.
        depth: number of blocks.
        heads: attention heads.
        causal: causal attention (each token sees only earlier ones).
        pooling: `"eos"` or `"mean"`.

    Example:
        >>> from keras_ssl.text import TextTransformer, Tokenizer
        >>> tokenizer = Tokenizer(max_length=16).adapt(["a photo of a cat.", "a picture of a dog."])
        >>> encoder = TextTransformer(vocab_size=tokenizer.vocab_size, max_length=16, dim=32, depth=1, heads=4)
        >>> tuple(encoder(tokenizer(["a photo of a cat."])).shape)
        (1, 32)
    """

    def __init__(self, vocab_size, max_length=16, dim=64, depth=2, heads=4, causal=True, pooling="eos", **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("eos", "mean"):
            raise ValueError(f"`pooling` must be 'eos' or 'mean', got {pooling!r}.")
        self.vocab_size, self.max_length, self.dim = int(vocab_size), int(max_length), int(dim)
        self.depth, self.heads, self.causal, self.pooling = int(depth), int(heads), bool(causal), pooling
        self.token_embedding = keras.layers.Embedding(self.vocab_size, self.dim)
        self.blocks = [TextBlock(self.dim, self.heads) for _ in range(self.depth)]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5)
        self.build((None, self.max_length))

    def build(self, input_shape):
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(self.max_length, self.dim),
            initializer=keras.initializers.RandomNormal(stddev=0.01),
        )
        self.token_embedding.build(input_shape)
        for block in self.blocks:
            block.build((None, None, self.dim))
        self.norm.build((None, None, self.dim))
        self.built = True

    def call(self, tokens, training=False):
        tokens = ops.cast(tokens, "int32")
        length = tokens.shape[1]
        if length is None or length > self.max_length:
            raise ValueError(f"token sequences must have a static length <= {self.max_length}, got {length}.")
        valid = tokens != PAD
        x = self.token_embedding(tokens) + self.position_embedding[:length]
        # Key j is visible when it is not padding; position 0 always is, so
        # no row is fully masked (an all-pad row would give NaN).
        keys = ops.logical_or(valid, ops.arange(length)[None, :] == 0)
        mask = ops.repeat(keys[:, None, :], length, axis=1)
        if self.causal:
            mask = ops.logical_and(mask, ops.tril(ops.ones((length, length), "bool"))[None])
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        weights = ops.cast(valid, x.dtype)
        if self.pooling == "eos":
            last = ops.maximum(ops.sum(ops.cast(valid, "int32"), axis=1) - 1, 0)
            weights = ops.one_hot(last, length, dtype=x.dtype)
        weights = weights / ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1.0)
        return ops.einsum("bl,bld->bd", weights, x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "dim": self.dim,
            "depth": self.depth,
            "heads": self.heads,
            "causal": self.causal,
            "pooling": self.pooling,
        }
