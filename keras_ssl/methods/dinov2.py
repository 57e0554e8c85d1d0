"""DINOv2 (Oquab et al. 2024, "DINOv2: Learning Robust Visual Features without Supervision")."""

import keras
from keras import ops

from keras_ssl import backend, losses
from keras_ssl.layers.distillation_heads import take_rows
from keras_ssl.methods.ibot import IBOT
from keras_ssl.views.multi_crop import dinov2_views

_CENTERINGS = ("sinkhorn_knopp", "centering")


@keras.saving.register_keras_serializable(package="keras_ssl")
class DINOv2(IBOT):
    """DINOv2: iBOT's two losses with Sinkhorn-Knopp centring and the KoLeo regulariser.

    As `IBOT` (the class-token loss across crops, the masked-patch loss on
    each global crop), except that the teacher's targets are Sinkhorn-Knopp
    codes of its outputs over the global batch at the teacher temperature
    (3 iterations; for patches over the masked patches only) instead of a
    centred softmax, and `koleo_weight` times KoLeo
    (`keras_ssl.losses.koleo`) of each global crop's student class tokens
    (before the head, per replica as the official) is added. Masks follow
    DINOv2's collate: half of the global crops masked, ratios spread over
    0.1-0.5. The patch heads, student's and teacher's, run on the masked
    patches only (a static number of rows, `BlockMasking.max_masked`, as
    the collate's `upperbound`), as the official `forward_backward`; the
    running patch centre (`centering="centering"`) follows them alone too.
    For register tokens and LayerScale, build the encoder with
    `keras_ssl.backbones.vit(..., num_registers=4, layerscale=1e-5)`.

    Args:
        encoder: a keras_ssl `ViT`.
        centering: `"sinkhorn_knopp"` (the paper) or `"centering"` (iBOT's
            running centres, `center_momentum` and `patch_center_momentum`).
        koleo_weight: KoLeo weight (official 0.1; 0 turns it off).
        teacher_temperature: after warm-up (official 0.07, warmed up from
            `warmup_teacher_temperature` 0.04 over `warmup_teacher_steps`);
            used for the patches too unless `teacher_patch_temperature` is given.
        momentum: teacher EMA momentum at step 0 (official 0.992), cosine to 1.
        shared_head: the official default (True: one head for both losses);
            False gives the patch tokens their own head (`patch_output_dim`).
        norm_last_layer: fix the heads' last-layer weight-norm scale to 1
            (DINO's and iBOT's); False (default) trains it, as DINOv2's `DINOHead`.
        **kwargs: `IBOT` options (head sizes, `mask_ratio`, `mask_probability`,
            loss weights, `views`, ...); the default views are `dinov2_views`.

    Example:
        >>> encoder = keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=32, depth=1, heads=2, num_registers=2)
        >>> model = keras_ssl.DINOv2(
        ...     encoder,
        ...     views=keras_ssl.views.dinov2_views(16, local_size=8, num_local=2),
        ...     output_dim=32,
        ...     hidden_dim=16,
        ...     bottleneck_dim=8,
        ... )
        >>> model.compile(optimizer=keras.optimizers.AdamW(5e-4))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['cls', 'koleo', 'loss', 'patch', 'z_std']
    """

    view_recipe = staticmethod(dinov2_views)
    # Sinkhorn-Knopp normalises over the global batch: the patch outputs are gathered too.
    gathered_outputs = ("student", "teacher", "h1", "student_patches", "teacher_patches", "patch_weights", "masks")
    local_outputs = ("cls_features",)
    loss_terms = ("cls", "patch", "koleo")
    masking_recipe = "dinov2"
    vit_init = "dinov2"  # vision_transformer.py init_weights: timm's, class token and registers N(0, 1e-6^2)
    # ssl_default_config.yaml: student.layerscale, drop_path_rate 0.3, drop_path_uniform
    # data/transforms.py make_normalize_transform: ImageNet's mean and std
    vit_options = {"layerscale": 1e-5, "drop_path": 0.3, "drop_path_uniform": True, "pixel_norm": "imagenet"}

    def __init__(
        self,
        encoder,
        *,
        centering="sinkhorn_knopp",
        koleo_weight=0.1,
        teacher_temperature=0.07,
        warmup_teacher_temperature=0.04,
        teacher_patch_temperature=None,
        warmup_teacher_patch_temperature=None,
        momentum=0.992,
        norm_last_layer=False,
        **kwargs,
    ):
        if centering not in _CENTERINGS:
            raise ValueError(f"`centering` must be one of {_CENTERINGS}, got {centering!r}.")
        if not koleo_weight >= 0:
            raise ValueError(f"`koleo_weight` must be >= 0, got {koleo_weight}.")
        # One teacher temperature for both losses unless the patch one is given.
        patch = teacher_temperature if teacher_patch_temperature is None else teacher_patch_temperature
        warmup = warmup_teacher_temperature
        warmup_patch = warmup if warmup_teacher_patch_temperature is None else warmup_teacher_patch_temperature
        super().__init__(
            encoder,
            teacher_temperature=teacher_temperature,
            warmup_teacher_temperature=warmup_teacher_temperature,
            teacher_patch_temperature=patch,
            warmup_teacher_patch_temperature=warmup_patch,
            momentum=momentum,
            norm_last_layer=norm_last_layer,
            **kwargs,
        )
        self.centering = centering
        self.koleo_weight = float(koleo_weight)

    def ssl_forward(self, views, training):
        outputs, global_cls = self._distill_forward(views, training)
        return {**outputs, "cls_features": global_cls}

    def cls_loss(self, outputs):
        if self.centering == "centering":
            return super().cls_loss(outputs)
        teacher = outputs["teacher"]
        codes = losses.sinkhorn(ops.concatenate(teacher, axis=0), self.current_teacher_temperature(), iterations=3)
        return losses.self_distillation(
            outputs["student"], ops.split(codes, len(teacher), axis=0), self.student_temperature
        )

    def _teacher_patches(self, head, tokens, rows, training):
        # DINOv2 centres the patch targets over the masked patches only: the head runs on them alone.
        return {"teacher_patches": ops.stop_gradient(head(take_rows(tokens, rows), training=training))}

    def teacher_patch_probs(self, outputs):
        if self.centering == "centering":
            return super().teacher_patch_probs(outputs)
        valid = outputs["patch_weights"] > 0
        temperature = self.current_teacher_patch_temperature()
        return losses.masked_sinkhorn(outputs["teacher_patches"], valid, temperature, iterations=3)

    def compute_ssl_loss(self, outputs):
        loss, terms = super().compute_ssl_loss(outputs)
        terms["koleo"] = sum(losses.koleo(c) for c in outputs["cls_features"])
        return loss + self.koleo_weight * terms["koleo"], terms

    def patch_center_batch_mean(self, outputs):
        # DINOv2's running patch centre follows the masked patches only.
        valid = ops.cast(outputs["patch_weights"] > 0, "float32")[:, None]
        sums = backend.gather(ops.sum(outputs["teacher_patches"] * valid, axis=0, keepdims=True))
        counts = backend.gather(ops.sum(valid, axis=0, keepdims=True))
        return ops.sum(sums, axis=0) / ops.maximum(ops.sum(counts), 1.0)

    def update_state(self, outputs):
        # Sinkhorn-Knopp needs no running centre.
        if self.centering == "centering":
            super().update_state(outputs)
