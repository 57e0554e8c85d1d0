"""iBOT (Zhou et al. 2022, "iBOT: Image BERT Pre-Training with Online Tokenizer")."""

import keras
from keras import ops

from keras_ssl import backend
from keras_ssl.layers.block_masks import BlockMasking, paper_masking
from keras_ssl.layers.distillation_heads import masked_rows, take_rows, update_centre
from keras_ssl.losses.distillation import gathered_patch_distillation
from keras_ssl.methods.dino import DINO
from keras_ssl.views.multi_crop import ibot_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class IBOT(DINO):
    """iBOT: DINO on the class token plus masked-patch self-distillation.

    The student sees the two global crops with blockwise-masked patches replaced by a learned
    mask token, and the local crops unmasked; the teacher (EMA) sees the global crops whole. Two
    losses, weighted `cls_weight` and `patch_weight`: DINO's cross-view loss on the class tokens,
    and the student's masked patch outputs against the teacher's centred, sharpened outputs for
    the same patches (`keras_ssl.losses.distillation.gathered_patch_distillation`). Each loss has
    its own centre (an EMA of the teacher's batch means, updated after the loss) and teacher
    temperature (warmed up together). The student's patch head runs on the masked patches only,
    up to the sampler's static bound (`BlockMasking.max_masked`); the teacher's on every patch,
    whose mean the patch centre follows.

    Args:
        encoder: a keras_ssl `ViT` (mask tokens go in after the patch embedding).
        output_dim: class-token head outputs (official: 8192).
        patch_output_dim: patch head outputs when `shared_head=False`.
        shared_head: one head for class and patch tokens (the official ViT-S/16 run); False: a
            separate patch head, MLP included, as DINOv2's `separate_head` (official iBOT's
            `--shared_head false` shares the MLP and gives the patches their own last layer).
        teacher_patch_temperature: patch teacher temperature after warm-up (official 0.07), from
            `warmup_teacher_patch_temperature` (0.04).
        patch_center_momentum: EMA momentum of the patch centre (official 0.9).
        mask_ratio: range of the per-image mask ratio (official 0.1-0.5).
        mask_probability: share of the global crops masked at all (official 0.5).
        cls_weight, patch_weight: loss weights (official `lambda1`, `lambda2`: 1).
        **kwargs: `DINO` options (`hidden_dim`, `bottleneck_dim`, temperatures, `warmup_teacher_steps`,
            `momentum`, `freeze_last_layer_steps`, `views`, ...); the default views are `ibot_views`.

    Example:
        >>> encoder = keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=32, depth=1, heads=2)
        >>> views = keras_ssl.views.ibot_views(16, local_size=8, num_local=2)
        >>> model = keras_ssl.IBOT(encoder, views=views, output_dim=32, hidden_dim=16, bottleneck_dim=8)
        >>> model.compile(optimizer=keras.optimizers.AdamW(5e-4))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['cls', 'loss', 'patch', 'z_std']
    """

    view_recipe = staticmethod(ibot_views)
    gathered_outputs = ("student", "teacher", "h1")
    local_outputs = ("student_patches", "teacher_patches", "teacher_patch_means", "patch_weights", "masks")
    loss_terms = ("cls", "patch")
    default_backbone = "vit_tiny"
    token_encoder = True
    # main_ibot.py --drop_path 0.1, the student's only; DataAugmentationiBOT's Normalize (ImageNet)
    vit_options = {"drop_path": 0.1, "pixel_norm": "imagenet"}
    #: the official masking settings (`paper_masking`)
    masking_recipe = "ibot"
    # True: the patch heads run on every patch (the computation before the gather; tests compare).
    _all_patches = False

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
        for name, value in (("", teacher_patch_temperature), ("warmup_", warmup_teacher_patch_temperature)):
            if not value > 0:
                raise ValueError(f"`{name}teacher_patch_temperature` must be > 0, got {value}.")
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
        settings = {**paper_masking(self.masking_recipe, encoder.grid_size), "mask_ratio": self.mask_ratio}
        settings["mask_probability"] = self.mask_probability
        self.masking = BlockMasking(encoder.grid_size, seed=self.next_seed(), **settings)
        self.mask_token = self.add_weight(name="mask_token", shape=(encoder.dim,), initializer="zeros")
        if not self.shared_head:
            self.patch_head = self.head.like(self.patch_output_dim)
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
        prefix = "teacher_" if teacher else ""
        return getattr(self, prefix + "head"), getattr(self, prefix + ("head" if self.shared_head else "patch_head"))

    def _patch_rows(self, masks):
        """The flattened patches the patch heads run on and their loss weights: the masked ones, padded."""
        batch, patches = masks.shape
        batch = ops.shape(masks)[0] if batch is None else batch
        # The sampler's bound keeps the shapes static, as DINOv2's `upperbound`.
        return masked_rows(masks, batch * patches if self._all_patches else self.masking.max_masked(batch))

    def _teacher_patches(self, head, tokens, rows, training):
        """The teacher's outputs on `rows`, no gradient, and (iBOT's centre) their means over every patch."""
        outputs = ops.stop_gradient(head(tokens, training=training))
        return {"teacher_patches": take_rows(outputs, rows), "teacher_patch_means": ops.mean(outputs, axis=1)}

    def ssl_forward(self, views, training):
        return self._distill_forward(views, training)[0]

    def _distill_forward(self, views, training):
        """The outputs, and the student's class tokens of each global crop (before the head)."""
        global_images = ops.concatenate(views[:2], axis=0)
        masks = self.masking(global_images)
        rows, weights = self._patch_rows(masks)
        cls, patches = self._tokens(self.encoder, global_images, training, masks)
        global_cls, local_cls = ops.split(cls, 2, axis=0), []
        if len(views) > 2:  # the local crops share one size: one encoder call for all of them
            local, _ = self._tokens(self.encoder, ops.concatenate(views[2:], axis=0), training)
            local_cls = ops.split(local, len(views) - 2, axis=0)
        head, patch_head = self._head_pair(teacher=False)
        teacher_cls, teacher_patches = self._tokens(self.teacher_encoder, global_images, training)
        teacher_head, teacher_patch_head = self._head_pair(teacher=True)
        teacher = self._heads(teacher_head, ops.split(teacher_cls, 2, axis=0), training)
        outputs = {
            "student": self._heads(head, [*global_cls, *local_cls], training),
            "teacher": [ops.stop_gradient(t) for t in teacher],
            "h1": global_cls[0],
            "student_patches": patch_head(take_rows(patches, rows), training=training, step=self.step),
            "patch_weights": weights,
            "masks": masks,
            **self._teacher_patches(teacher_patch_head, teacher_patches, rows, training),
        }
        return outputs, global_cls

    def teacher_patch_probs(self, outputs):
        """The teacher's targets for the gathered patches, `(M, K)`: centred and sharpened."""
        center = ops.convert_to_tensor(self.patch_center)
        logits = ops.cast(outputs["teacher_patches"], "float32") - center
        return ops.softmax(logits / self.current_teacher_patch_temperature())

    def cls_loss(self, outputs):
        return super().compute_ssl_loss(outputs)[0]

    def patch_loss(self, outputs):
        # Each image's masked patches weigh 1 / their number; the mean over the global crops' images.
        student, weights, images = outputs["student_patches"], outputs["patch_weights"], ops.shape(outputs["masks"])[0]
        return gathered_patch_distillation(
            student, self.teacher_patch_probs(outputs), weights, images, self.student_temperature
        )

    def compute_ssl_loss(self, outputs):
        terms = {"cls": self.cls_loss(outputs), "patch": self.patch_loss(outputs)}
        return self.cls_weight * terms["cls"] + self.patch_weight * terms["patch"], terms

    def patch_center_batch_mean(self, outputs):
        """The `(K,)` mean of the teacher's patch outputs over the global batch: all patches (iBOT)."""
        return ops.mean(backend.gather(outputs["teacher_patch_means"]), axis=0)

    def update_state(self, outputs):
        super().update_state(outputs)
        update_centre(self.patch_center, self.patch_center_batch_mean(outputs), self.patch_center_momentum)
