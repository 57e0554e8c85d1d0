"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers")."""

import keras
from keras import ops

from keras_ssl import backend, losses
from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import DINOHead
from keras_ssl.views.multi_crop import dino_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class DINO(SSLModel):
    """DINO: self-distillation from a momentum teacher, without labels.

    The student (encoder + `DINOHead`) sees every multi-crop view; the
    teacher, an EMA of the student (cosine momentum `momentum` -> 1), sees
    the two global crops only. The student's softmax (temperature
    `student_temperature`) is trained to match the teacher's centred and
    sharpened softmax on the other crops (`keras_ssl.losses.dino`). The
    centre is an EMA (`center_momentum`) of the teacher's batch mean, updated
    in training only, after the loss has used the previous centre. The
    teacher temperature warms up linearly from `warmup_teacher_temperature`
    over `warmup_teacher_steps` optimizer steps.

    Args:
        encoder: any backbone mapping images in [0, 1] to `(B, D)` features
            and accepting both crop sizes (a ViT from `keras_ssl.backbones`,
            or a conv net with input `(None, None, C)`; then pass `input_shape=`).
        output_dim: head output size `K` (paper: 65536).
        hidden_dim: head MLP width; defaults to `min(2048, 4 * D)` (paper:
            2048; smaller encoders get a proportionally smaller head).
        bottleneck_dim: head bottleneck width (paper: 256).
        norm_last_layer: fix the head's last-layer weight-norm scale to 1.
        use_bn_in_head: BatchNorm after each hidden layer of the head (the
            official option; off for ViTs, lightly's CIFAR-10 ResNet recipe sets it).
        student_temperature: > 0 (paper: 0.1).
        teacher_temperature: teacher temperature after warm-up (paper 0.04-0.07).
        warmup_teacher_temperature: teacher temperature at step 0.
        warmup_teacher_steps: length of the linear warm-up (0: none): steps
            0 to W - 1 take `np.linspace(warmup, final, W)`, as the official.
        center_momentum: EMA momentum of the centre, in [0, 1).
        momentum: teacher EMA momentum at step 0 (paper: 0.996), cosine to
            `momentum_end` (1.0).
        freeze_last_layer_steps: optimizer steps during which the head's
            last layer gets no gradient (the paper: the first epoch; 200 is
            about one CIFAR-10 epoch at batch 256). Counted in steps, as
            SwAV's frozen prototypes, so it is exact inside the compiled step.
        views: a `MultiCrop` (2 global crops first); defaults to DINO's
            recipe (`multi_crop_views` with global scale (0.4, 1), local
            (0.05, 0.4), blur 1.0 / 0.1 on the global crops and 0.5 on the
            local ones above 32 px, solarisation 0.2 on the second global
            crop): 2 global crops and 4 local ones of half the side (paper:
            10 local crops of 96 px for 224 px).
        **kwargs: `SSLModel` options (`input_shape`, `image_size`, `seed`, ...).

    Example:
        >>> encoder = keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=32, depth=1, heads=2)
        >>> model = keras_ssl.DINO(
        ...     encoder,
        ...     views=keras_ssl.views.dino_views(16, local_size=8),
        ...     output_dim=32,
        ...     hidden_dim=16,
        ...     bottleneck_dim=8,
        ... )
        >>> model.compile(optimizer=keras.optimizers.AdamW(5e-4))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['loss', 'z_std']
    """

    local_views = True
    view_recipe = staticmethod(dino_views)
    momentum_pairs = (("encoder", "teacher_encoder"), ("head", "teacher_head"))
    gathered_outputs = ("student", "teacher", "h1")
    monitored_output = "h1"
    # main_dino.py --drop_path_rate 0.1, the student's only; DataAugmentationDINO's Normalize (ImageNet)
    vit_options = {"drop_path": 0.1, "pixel_norm": "imagenet"}
    evaluated_encoder = "teacher_encoder"  # eval_knn.py / eval_linear.py: --checkpoint_key teacher

    def __init__(
        self,
        encoder,
        *,
        output_dim=4096,
        hidden_dim=None,
        bottleneck_dim=256,
        norm_last_layer=True,
        use_bn_in_head=False,
        student_temperature=0.1,
        teacher_temperature=0.04,
        warmup_teacher_temperature=0.04,
        warmup_teacher_steps=0,
        center_momentum=0.9,
        momentum=0.996,
        momentum_end=1.0,
        freeze_last_layer_steps=200,
        **kwargs,
    ):
        for name, value in (
            ("student_temperature", student_temperature),
            ("teacher_temperature", teacher_temperature),
            ("warmup_teacher_temperature", warmup_teacher_temperature),
        ):
            if not value > 0:
                raise ValueError(f"`{name}` must be > 0, got {value}.")
        if not 0.0 <= center_momentum < 1.0:
            raise ValueError(f"`center_momentum` must be in [0, 1), got {center_momentum}.")
        for name, value in (
            ("warmup_teacher_steps", warmup_teacher_steps),
            ("freeze_last_layer_steps", freeze_last_layer_steps),
        ):
            if int(value) != value or value < 0:
                raise ValueError(f"`{name}` must be an integer >= 0, got {value}.")
        super().__init__(encoder, momentum=momentum, momentum_end=momentum_end, **kwargs)
        self.output_dim, self.bottleneck_dim = int(output_dim), int(bottleneck_dim)
        self.hidden_dim = int(hidden_dim or min(2048, 4 * self.feature_dim))
        self.norm_last_layer, self.use_bn_in_head = bool(norm_last_layer), bool(use_bn_in_head)
        self.student_temperature = float(student_temperature)
        self.teacher_temperature = float(teacher_temperature)
        self.warmup_teacher_temperature = float(warmup_teacher_temperature)
        self.warmup_teacher_steps = int(warmup_teacher_steps)
        self.center_momentum = float(center_momentum)
        self.freeze_last_layer_steps = int(freeze_last_layer_steps)
        self.head = DINOHead(
            self.output_dim,
            self.hidden_dim,
            self.bottleneck_dim,
            norm_last_layer=self.norm_last_layer,
            freeze_last_layer_steps=self.freeze_last_layer_steps,
            use_bn=self.use_bn_in_head,
        )
        self.head.build((None, self.feature_dim))
        self.center = self.add_weight(name="center", shape=(self.output_dim,), initializer="zeros", trainable=False)

    def current_teacher_temperature(self):
        """The teacher temperature of this step: linear warm-up, then constant."""
        return self._warmed_up(self.warmup_teacher_temperature, self.teacher_temperature)

    def _warmed_up(self, start, end):
        """`start` -> `end` linearly over `warmup_teacher_steps`, then `end` (float32)."""
        if self.warmup_teacher_steps == 0:
            return ops.convert_to_tensor(end, "float32")
        # The official np.linspace(start, end, W): `end` already at step W - 1.
        done = ops.minimum(ops.cast(self.step, "float32") / max(self.warmup_teacher_steps - 1, 1), 1.0)
        return start + (end - start) * done

    def _heads(self, head, features, training):
        # One head call over all crops, split back per crop.
        logits = head(ops.concatenate(features, axis=0), training=training, step=self.step)
        return ops.split(logits, len(features), axis=0)

    def ssl_forward(self, views, training):
        features = self.encode(views, training)
        student = self._heads(self.head, features, training)
        teacher_features = self.encode(views[:2], training, encoder=self.teacher_encoder)
        teacher = [ops.stop_gradient(t) for t in self._heads(self.teacher_head, teacher_features, training)]
        return {"student": student, "teacher": teacher, "h1": features[0]}

    def compute_ssl_loss(self, outputs):
        return losses.dino(
            outputs["student"],
            outputs["teacher"],
            self.center,
            self.student_temperature,
            self.current_teacher_temperature(),
        ), {}

    def update_state(self, outputs):
        # After the loss has used the previous centre, which follows the
        # global batch (every replica's teacher outputs).
        batch_mean = ops.mean(backend.gather(ops.concatenate(outputs["teacher"], axis=0)), axis=0)
        m = self.center_momentum
        self.center.assign(m * ops.convert_to_tensor(self.center) + (1.0 - m) * ops.cast(batch_mean, "float32"))
