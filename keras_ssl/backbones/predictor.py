"""I-JEPA's predictor (Assran et al. 2023): a narrow ViT on the encoded context and positional mask
tokens, with fixed 2D sine-cosine positions."""

import math

import keras
from keras import ops

from keras_ssl.backbones.transformer import TransformerBlock, sincos_positions
from keras_ssl.initializers import trunc_normal


@keras.saving.register_keras_serializable(package="keras_ssl")
class JEPAPredictor(keras.layers.Layer):
    """I-JEPA's narrow ViT predictor: context tokens and positional mask tokens -> target features.

    Context tokens are projected to `dim` and get fixed sine-cosine positions; each target block
    gets a learned mask token plus its patches' positions; the blocks run on context + one
    block's mask tokens, and the mask tokens' outputs are projected back to `output_dim`.
    Padding entries (`valid` False) are never attended to.

    Args:
        grid_size: patches per side of the full image.
        output_dim: the encoder's token size.
        dim, depth, heads: predictor token size, blocks, heads (official ViT-H: 384 / 12 / 12).

    Example:
        >>> from keras_ssl.backbones.predictor import JEPAPredictor
        >>> predictor = JEPAPredictor(4, 32, dim=16, depth=1, heads=2)
        >>> context, ids = ops.zeros((8, 9, 32)), ops.tile(ops.arange(9)[None], (8, 1))
        >>> targets = ops.tile(ops.arange(3)[None, None], (8, 4, 1)) + 12   # 4 blocks of 3 patches
        >>> valid = ops.ones((8, 9), "bool")
        >>> tuple(predictor(context, ids, valid, targets, ops.ones((8, 4, 3), "bool")).shape)
        (8, 4, 3, 32)
    """

    def __init__(self, grid_size, output_dim, dim=384, depth=12, heads=12, **kwargs):
        super().__init__(**kwargs)
        self.grid_size, self.output_dim = int(grid_size), int(output_dim)
        self.dim, self.depth, self.heads = int(dim), int(depth), int(heads)
        self.positions = sincos_positions(self.dim, self.grid_size)
        self.embed = keras.layers.Dense(self.dim)
        self.blocks = [TransformerBlock(self.dim, self.heads) for _ in range(self.depth)]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.proj = keras.layers.Dense(self.output_dim)

    def build(self, context_shape, *args):
        self.embed.build(context_shape)
        self.mask_token = self.add_weight(name="mask_token", shape=(1, 1, self.dim), initializer="zeros")
        tokens = (None, None, self.dim)
        for block in self.blocks:
            block.build(tokens)
        self.norm.build(tokens)
        self.proj.build(tokens)
        # The official init: N(0, 0.02) truncated for the mask token and every kernel (helper.init_model
        # redraws each Linear after fix_init_weight, so no output is rescaled); one draw for all, as JAX
        # compiles an initializer per shape.
        kernels = [(self.mask_token, 1), (self.embed.kernel, 1), (self.proj.kernel, 1)]
        for block in self.blocks:
            kernels += [(block.qkv.kernel, 1), (block.proj.kernel, 1), (block.fc1.kernel, 1), (block.fc2.kernel, 1)]
        flat = ops.convert_to_numpy(trunc_normal()((sum(math.prod(v.shape) for v, _ in kernels),)))
        start = 0
        for variable, scale in kernels:
            size = math.prod(variable.shape)
            variable.assign(flat[start : start + size].reshape(variable.shape) / math.sqrt(scale))
            start += size

    def call(self, context, context_ids, context_valid, target_ids, target_valid, training=False):
        """`context` `(B, Kc, D)` at `context_ids`; `target_ids` `(B, M, Kt)` -> `(B, M, Kt, D)`."""
        blocks, size = target_ids.shape[1], target_ids.shape[2]
        positions = ops.convert_to_tensor(self.positions)
        x = self.embed(context)
        x = x + ops.cast(ops.take(positions, context_ids, axis=0), x.dtype)
        queries = ops.cast(self.mask_token[None], x.dtype) + ops.cast(ops.take(positions, target_ids, axis=0), x.dtype)
        # Every target block is predicted from the whole context, blocks batched together.
        x = ops.repeat(x[:, None], blocks, axis=1)
        x = ops.reshape(ops.concatenate([x, queries], axis=2), (-1, context.shape[1] + size, self.dim))
        valid = ops.concatenate([ops.repeat(ops.cast(context_valid, "bool")[:, None], blocks, axis=1), target_valid], 2)
        valid = ops.reshape(valid, (-1, context.shape[1] + size))
        for block in self.blocks:
            x = block(x, training=training, attention_mask=valid)
        x = self.proj(self.norm(x)[:, context.shape[1] :])
        return ops.reshape(x, (-1, blocks, size, self.output_dim))

    def get_config(self):
        return {
            **super().get_config(),
            "grid_size": self.grid_size,
            "output_dim": self.output_dim,
            "dim": self.dim,
            "depth": self.depth,
            "heads": self.heads,
        }
