"""I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture")."""

import keras
from keras import ops

from keras_ssl.backbones.predictor import JEPAPredictor
from keras_ssl.engine import SSLModel
from keras_ssl.engine.introspection import has_class_token
from keras_ssl.layers.masking import take_tokens
from keras_ssl.layers.multiblock_masks import MultiBlockMasking
from keras_ssl.losses.predictive import ijepa as ijepa_loss
from keras_ssl.views.recipes import ijepa_view


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
        encoder: a keras_ssl `ViT` (registers allowed); I-JEPA's own has no class token and fixed
            positions: `vit(..., class_token=False, pool="mean", positions="sincos")`, as the CLI builds.
        predictor_dim: predictor width, a multiple of 4; default `min(384, encoder.dim)`.
        predictor_depth: predictor blocks (official: 12).
        predictor_heads: default: the encoder's (the official `num_heads=encoder.num_heads`), or, when
            they do not divide the width, its largest divisor up to width / 32.
        num_targets, target_scale, target_aspect, context_scale: the masks (paper: 4,
            (0.15, 0.2), (0.75, 1.5), (0.85, 1.0)).
        common_context: cut every image's context to the batch's smallest (the official
            collator); False: each image keeps its whole context (more context on small grids).
        loss: `"smooth_l1"` or `"l2"`.
        momentum, momentum_end: EMA momentum, linear over the run (paper: 0.996 -> 1).
        views: a `OneView`; default `ijepa_view` (random resized crop 0.3-1, nothing else).
        **kwargs: `SSLModel` options.

    Example:
        >>> encoder = keras_ssl.backbones.vit(
        ...     image_size=16, patch_size=4, dim=32, depth=1, heads=2, class_token=False, pool="mean", positions="sincos"
        ... )
        >>> model = keras_ssl.IJEPA(encoder, predictor_dim=16, predictor_depth=1, predictor_heads=2, num_targets=2)
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
    token_encoder = True
    vit_init = "ijepa"  # helper.init_model: trunc_normal_(.02) on every Linear, redrawn after fix_init_weight
    # vision_transformer.py: get_2d_sincos_pos_embed, requires_grad=False, and no class token
    # and src/transforms.py: transforms.Normalize with ImageNet's mean and std
    vit_options = {"positions": "sincos", "class_token": False, "pool": "mean", "pixel_norm": "imagenet"}
    needs_class_token = False
    encodes_token_subsets = True
    evaluated_encoder = "target_encoder"  # the paper (sec. 4): the target encoder, patch tokens average-pooled

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
        own = getattr(encoder, "heads", None)
        heads = predictor_heads or (
            own if own and dim % own == 0 else max(h for h in range(1, max(2, dim // 32 + 1)) if dim % h == 0)
        )
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
        # The official encoder has no class token; keras_ssl's ViT may (then it is dropped here).
        cls = int(has_class_token(self.encoder))
        pred = self.predictor(
            latent[:, cls:],
            masks["context_ids"],
            masks["context_valid"],
            masks["target_ids"],
            masks["target_valid"],
            training=training,
        )
        target = self.target_encoder.encode_tokens(self.target_encoder.embed_patches(images, training=training))
        target = ops.stop_gradient(target[:, cls:])
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
