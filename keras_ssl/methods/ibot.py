"""iBOT (Zhou et al. 2022, "iBOT: Image BERT Pre-Training with Online Tokenizer")."""

import keras
from keras import ops

from keras_ssl import backend, losses
from keras_ssl.backbones.vit import ViT
from keras_ssl.layers.block_masks import BlockMasking, paper_masking
from keras_ssl.layers.heads import DINOHead
from keras_ssl.methods.dino import DINO
from keras_ssl.views.multi_crop import ibot_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class IBOT(DINO):
    """iBOT: DINO on the class token plus masked-patch self-distillation.

    The student sees the two global crops with blockwise-masked patches
    replaced by a learned mask token, and the local crops unmasked; the
    teacher (EMA) sees the global crops unmasked. Two losses, weighted
    `cls_weight` and `patch_weight`: DINO's cross-view loss on the class
    tokens (centre `center`), and on each global crop the student's masked
    patch outputs against the teacher's centred, sharpened outputs for the
    same patches (`keras_ssl.losses.masked_patch_distillation`, its own
    centre and temperature). Both centres are EMAs of the teacher's batch
    means, updated after the loss; both temperatures warm up together.

    Args:
        encoder: a keras_ssl `ViT` (mask tokens go in after the patch embedding).
        output_dim: class-token head outputs (official: 8192).
        patch_output_dim: patch head outputs when `shared_head=False`.
        shared_head: one head for class and patch tokens (the official
            ViT-S/16 run); False: a separate patch head (MLP included).
        teacher_patch_temperature: patch teacher temperature after warm-up
            (official 0.07), from `warmup_teacher_patch_temperature` (0.04).
        patch_center_momentum: EMA momentum of the patch centre (official 0.9).
        mask_ratio: range of the per-image mask ratio (official 0.1-0.5).
        mask_probability: share of the global crops masked at all (official 0.5).
        cls_weight, patch_weight: loss weights (official `lambda1`, `lambda2`: 1).
        **kwargs: `DINO` options (`hidden_dim`, `bottleneck_dim`, temperatures,
            `warmup_teacher_steps`, `momentum`, `freeze_last_layer_steps`,
            `views`, ...); the default views are `ibot_views`.

    Example:
        >>> encoder = keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=32, depth=1, heads=2)
        >>> model = keras_ssl.IBOT(
        ...     encoder,
        ...     views=keras_ssl.views.ibot_views(16, local_size=8, num_local=2),
        ...     output_dim=32,
        ...     hidden_dim=16,
        ...     bottleneck_dim=8,
        ... )
        >>> model.compile(optimizer=keras.optimizers.AdamW(5e-4))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['cls', 'loss', 'patch', 'z_std']
    """

    view_recipe = staticmethod(ibot_views)
    gathered_outputs = ("student", "teacher", "h1")
    local_outputs = ("student_patches", "teacher_patches", "masks")
    loss_terms = ("cls", "patch")
    default_backbone = "vit_tiny"
    #: the official masking settings (`paper_masking`)
    masking_recipe = "ibot"

    def __init__(
        self,
        encoder,
        *,
        output_dim=8192,
        patch_output_dim=8192,
        shared_head=True,
        teacher_patch_temperature=0.07,
        warmup_teacher_patch_temperature=0.04,
        patch_center_momentum=0.9,
        mask_ratio=(0.1, 0.5),
        mask_probability=0.5,
        cls_weight=1.0,
        patch_weight=1.0,
        **kwargs,
    ):
        if not isinstance(encoder, ViT):
            raise TypeError(
                f"{type(self).__name__} needs a keras_ssl ViT encoder (keras_ssl.backbones.vit_tiny(...)): "
                f"its student puts mask tokens among the patch tokens; got {type(encoder).__name__}."
            )
        for name, value in (
            ("teacher_patch_temperature", teacher_patch_temperature),
            ("warmup_teacher_patch_temperature", warmup_teacher_patch_temperature),
        ):
            if not value > 0:
                raise ValueError(f"`{name}` must be > 0, got {value}.")
        if not 0.0 <= patch_center_momentum < 1.0:
            raise ValueError(f"`patch_center_momentum` must be in [0, 1), got {patch_center_momentum}.")
        if cls_weight < 0 or patch_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got cls_weight={cls_weight}, patch_weight={patch_weight}.")
        super().__init__(encoder, output_dim=output_dim, **kwargs)
        self.shared_head = bool(shared_head)
        if not self.shared_head:
            # A separate patch head gets its own teacher (the engine makes it after the constructor).
            self.momentum_pairs = (*DINO.momentum_pairs, ("patch_head", "teacher_patch_head"))
        self.patch_output_dim = self.output_dim if self.shared_head else int(patch_output_dim)
        self.teacher_patch_temperature = float(teacher_patch_temperature)
        self.warmup_teacher_patch_temperature = float(warmup_teacher_patch_temperature)
        self.patch_center_momentum = float(patch_center_momentum)
        self.mask_ratio = (float(mask_ratio[0]), float(mask_ratio[1]))
        self.mask_probability = float(mask_probability)
        self.cls_weight, self.patch_weight = float(cls_weight), float(patch_weight)
        grid = encoder.grid_size
        settings = {**paper_masking(self.masking_recipe, grid), "mask_ratio": self.mask_ratio}
        settings["mask_probability"] = self.mask_probability
        self.masking = BlockMasking(grid, seed=self.next_seed(), **settings)
        self.mask_token = self.add_weight(name="mask_token", shape=(encoder.dim,), initializer="zeros")
        if not self.shared_head:
            self.patch_head = DINOHead(
                self.patch_output_dim,
                self.hidden_dim,
                self.bottleneck_dim,
                norm_last_layer=self.norm_last_layer,
                freeze_last_layer_steps=self.freeze_last_layer_steps,
            )
            self.patch_head.build((None, None, self.feature_dim))
        self.patch_center = self.add_weight(
            name="patch_center", shape=(self.patch_output_dim,), initializer="zeros", trainable=False
        )

    def current_teacher_patch_temperature(self):
        """The patch teacher temperature of this step: linear warm-up, then constant."""
        return self._warmed_up(self.warmup_teacher_patch_temperature, self.teacher_patch_temperature)

    def _tokens(self, encoder, images, training, masks=None):
        """`(class token, patch tokens)` of `encoder` on `images`, masked patches replaced."""
        tokens = encoder.embed_patches(images, training=training, mask=masks, mask_token=self.mask_token)
        encoded = encoder.encode_tokens(tokens, training=training)
        return encoded[:, 0], encoded[:, 1:]

    def _head_pair(self, teacher):
        head = self.teacher_head if teacher else self.head
        if self.shared_head:
            return head, head
        return head, self.teacher_patch_head if teacher else self.patch_head

    def ssl_forward(self, views, training):
        return self._distill_forward(views, training)[0]

    def _distill_forward(self, views, training):
        """The outputs, and the student's class tokens of each global crop (before the head)."""
        num_global = 2
        global_images = ops.concatenate(views[:num_global], axis=0)
        masks = self.masking(global_images)
        cls, patches = self._tokens(self.encoder, global_images, training, masks)
        global_cls = ops.split(cls, num_global, axis=0)
        local_cls = []
        if len(views) > num_global:
            # The local crops share one size: one encoder call for all of them.
            local, _ = self._tokens(self.encoder, ops.concatenate(views[num_global:], axis=0), training)
            local_cls = ops.split(local, len(views) - num_global, axis=0)
        head, patch_head = self._head_pair(teacher=False)
        student = self._heads(head, [*global_cls, *local_cls], training)
        student_patches = patch_head(patches, training=training, step=self.step)
        teacher_cls, teacher_patches = self._tokens(self.teacher_encoder, global_images, training)
        teacher_head, teacher_patch_head = self._head_pair(teacher=True)
        teacher = self._heads(teacher_head, ops.split(teacher_cls, num_global, axis=0), training)
        teacher_patches = teacher_patch_head(teacher_patches, training=training)
        outputs = {
            "student": student,
            "teacher": [ops.stop_gradient(t) for t in teacher],
            "h1": global_cls[0],
            "student_patches": ops.split(student_patches, num_global, axis=0),
            "teacher_patches": ops.split(ops.stop_gradient(teacher_patches), num_global, axis=0),
            "masks": ops.split(masks, num_global, axis=0),
        }
        return outputs, global_cls

    def teacher_patch_probs(self, outputs):
        """The teacher's patch targets, one `(B, N, K)` per global crop: centred and sharpened."""
        temperature = self.current_teacher_patch_temperature()
        center = ops.convert_to_tensor(self.patch_center)
        return [ops.softmax((ops.cast(t, "float32") - center) / temperature) for t in outputs["teacher_patches"]]

    def cls_loss(self, outputs):
        return super().compute_ssl_loss(outputs)[0]

    def patch_loss(self, outputs):
        # Each global crop's masked student patches against the teacher's same crop, averaged.
        pairs = zip(outputs["student_patches"], self.teacher_patch_probs(outputs), outputs["masks"])
        total = [losses.masked_patch_distillation(s, t, m, self.student_temperature) for s, t, m in pairs]
        return sum(total) / len(total)

    def compute_ssl_loss(self, outputs):
        terms = {"cls": self.cls_loss(outputs), "patch": self.patch_loss(outputs)}
        return self.cls_weight * terms["cls"] + self.patch_weight * terms["patch"], terms

    def patch_center_batch_mean(self, outputs):
        """The `(K,)` mean of the teacher's patch outputs over the global batch: all patches (iBOT)."""
        per_image = ops.mean(ops.concatenate(outputs["teacher_patches"], axis=0), axis=1)
        return ops.mean(backend.gather(per_image), axis=0)

    def update_state(self, outputs):
        super().update_state(outputs)
        m = self.patch_center_momentum
        batch_mean = ops.cast(self.patch_center_batch_mean(outputs), "float32")
        self.patch_center.assign(m * ops.convert_to_tensor(self.patch_center) + (1.0 - m) * batch_mean)
