"""I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture")."""

import math

import keras
from keras import ops

from keras_ssl.backbones.transformer import TransformerBlock
from keras_ssl.backbones.vit import ViT
from keras_ssl.engine import SSLModel
from keras_ssl.layers.jepa import sincos_positions
from keras_ssl.layers.masking import take_tokens
from keras_ssl.layers.multiblock_masks import MultiBlockMasking
from keras_ssl.losses.predictive import ijepa as ijepa_loss
from keras_ssl.views.recipes import crop_view

_INIT = keras.initializers.TruncatedNormal(stddev=0.02)


def ijepa_view(image_size, *, channels=3, crop_scale=(0.3, 1.0), min_crop_scale=None, horizontal_flip=False, seed=None):
    """I-JEPA's one view: a random resized crop (scale 0.3-1), no flip, no colour.

    `horizontal_flip` is accepted (recipe signature) and ignored: the official recipe never flips.

    Example:
        >>> from keras_ssl.methods.ijepa import ijepa_view
        >>> [v] = ijepa_view(8, seed=0)(images, training=True)
        >>> tuple(v.shape)
        (8, 8, 8, 3)
    """
    del horizontal_flip
    return crop_view(image_size, crop_scale=crop_scale, min_crop_scale=min_crop_scale, horizontal_flip=False, seed=seed)


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
        >>> from keras_ssl.methods.ijepa import JEPAPredictor
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
        # The official init: N(0, 0.02) truncated, residual outputs scaled by 1 / sqrt(2 * layer);
        # one draw for all, as JAX compiles an initializer per shape.
        kernels = [(self.mask_token, 1), (self.embed.kernel, 1), (self.proj.kernel, 1)]
        for i, block in enumerate(self.blocks):
            kernels += [(block.qkv.kernel, 1), (block.proj.kernel, 2 * (i + 1))]
            kernels += [(block.fc1.kernel, 1), (block.fc2.kernel, 2 * (i + 1))]
        flat = ops.convert_to_numpy(_INIT((sum(math.prod(v.shape) for v, _ in kernels),)))
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


@keras.saving.register_keras_serializable(package="keras_ssl")
class IJEPA(SSLModel):
    """I-JEPA: predict the target encoder's features of image blocks from a context block.

    Per batch (`layers.multiblock_masks`), `num_targets` target blocks (scale `target_scale`,
    aspect `target_aspect`) and one context block (scale `context_scale`, square) minus the
    targets. The ViT encoder sees the context patches only; a narrow ViT predictor, given the
    encoded context and positional mask tokens, predicts the patch features of each target
    block. Targets: the whole image's patch tokens from the EMA target encoder (linear momentum
    `momentum` -> `momentum_end`, the official schedule), layer-normed; the loss is
    `losses.predictive.ijepa` (`loss="smooth_l1"`, official, or `"l2"`, the paper). The logged
    `z` is the target encoder's mean patch token, the features I-JEPA evaluates.

    Args:
        encoder: a keras_ssl `ViT` (registers allowed).
        predictor_dim: predictor width, a multiple of 4; default `min(384, encoder.dim)`.
        predictor_depth: predictor blocks (official: 12).
        predictor_heads: default: the largest divisor of the width up to width / 32 (official: 12 for 384).
        num_targets, target_scale, target_aspect, context_scale: the masks (paper: 4,
            (0.15, 0.2), (0.75, 1.5), (0.85, 1.0)).
        common_context: cut every image's context to the batch's smallest (the official
            collator); False: each image keeps its whole context (more context on small grids).
        loss: `"smooth_l1"` or `"l2"`.
        momentum, momentum_end: EMA momentum, linear over the run (paper: 0.996 -> 1).
        views: a `OneView`; default `ijepa_view` (random resized crop 0.3-1, nothing else).
        **kwargs: `SSLModel` options.

    Example:
        >>> from keras_ssl.methods.ijepa import IJEPA
        >>> encoder = keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=32, depth=1, heads=2)
        >>> model = IJEPA(encoder, predictor_dim=16, predictor_depth=1, predictor_heads=2, num_targets=2)
        >>> model.compile(optimizer=keras.optimizers.AdamW(1e-3))
        >>> sorted(model.fit(x_train, epochs=1, batch_size=16, verbose=0).history)
        ['loss', 'z_std']
    """

    global_views = 1
    view_recipe = staticmethod(ijepa_view)
    momentum_pairs = (("encoder", "target_encoder"),)
    local_outputs = ("pred", "target", "target_ids", "target_valid", "z")
    monitored_output = "z"
    default_backbone = "vit_tiny"

    def __init__(
        self,
        encoder,
        *,
        predictor_dim=None,
        predictor_depth=6,
        predictor_heads=None,
        num_targets=4,
        target_scale=(0.15, 0.2),
        target_aspect=(0.75, 1.5),
        context_scale=(0.85, 1.0),
        common_context=True,
        loss="smooth_l1",
        momentum=0.996,
        momentum_end=1.0,
        **kwargs,
    ):
        if not isinstance(encoder, ViT):
            raise TypeError(f"I-JEPA needs a keras_ssl ViT encoder, got {type(encoder).__name__}.")
        if loss not in ("smooth_l1", "l2"):
            raise ValueError(f"`loss` must be 'smooth_l1' or 'l2', got {loss!r}.")
        super().__init__(encoder, momentum=momentum, momentum_end=momentum_end, **kwargs)
        if self.image_size % encoder.patch_size:
            raise ValueError(f"patch_size {encoder.patch_size} does not divide image_size {self.image_size}.")
        self.predictor_dim, self.predictor_depth, self.predictor_heads = predictor_dim, predictor_depth, predictor_heads
        self.num_targets, self.loss = num_targets, loss
        self.target_scale, self.target_aspect = tuple(target_scale), tuple(target_aspect)
        self.context_scale, self.common_context = tuple(context_scale), bool(common_context)
        grid = self.image_size // encoder.patch_size
        dim = predictor_dim or min(384, encoder.dim)
        heads = predictor_heads or max(h for h in range(1, max(2, dim // 32 + 1)) if dim % h == 0)
        if dim % 4 or dim % heads:
            raise ValueError(f"predictor_dim {dim} must be a multiple of 4 and of predictor_heads {heads}.")
        self.masking = MultiBlockMasking(
            grid,
            num_targets,
            target_scale,
            target_aspect,
            context_scale,
            common_context=common_context,
            seed=self.next_seed(),
        )
        self.predictor = JEPAPredictor(grid, encoder.dim, dim, predictor_depth, heads)
        self.predictor.build((None, None, encoder.dim))

    def current_momentum(self):
        """The official linear schedule from `momentum` to `momentum_end` (not the engine's cosine)."""
        base, end = self._momentum_ends[0], self._momentum_ends[1]
        return base + (end - base) * self.training_progress()

    def ssl_forward(self, views, training):
        images = views[0]
        masks = self.masking(images)
        context = take_tokens(self.encoder.embed_patches(images, training=training), masks["context_ids"])
        latent = self.encoder.encode_tokens(context, training=training, attention_mask=masks["context_valid"])
        pred = self.predictor(
            latent[:, 1:],
            masks["context_ids"],
            masks["context_valid"],
            masks["target_ids"],
            masks["target_valid"],
            training=training,
        )
        target = self.target_encoder.encode_tokens(self.target_encoder.embed_patches(images, training=training))
        target = ops.stop_gradient(target[:, 1:])
        return {
            "pred": pred,
            "target": target,
            "target_ids": masks["target_ids"],
            "target_valid": masks["target_valid"],
            "z": ops.mean(target, axis=1),
        }

    def compute_ssl_loss(self, outputs):
        loss = ijepa_loss(
            outputs["pred"], outputs["target"], outputs["target_ids"], outputs["target_valid"], loss=self.loss
        )
        return loss, {}
