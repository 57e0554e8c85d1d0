"""MSN, Masked Siamese Networks (Assran et al. 2022, "Masked Siamese Networks for Label-Efficient Learning")."""

import math

import keras
from keras import ops

from keras_ssl.engine import SSLModel
from keras_ssl.layers.heads import MSNHead
from keras_ssl.layers.masking import RandomMasking
from keras_ssl.losses.prototypes import msn
from keras_ssl.views.multi_crop import msn_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class MSN(SSLModel):
    """MSN: a masked anchor view predicts the prototype assignment of an unmasked target view.

    The anchor views (the second random crop, whose patch tokens are randomly
    dropped, and the focal crops) pass through the ViT and `MSNHead`; the
    target view (the first random crop, unmasked) through their EMA copies
    (momentum `momentum` -> `momentum_end`). Both are softly assigned to
    learnable prototypes (cosine / `temperature`); the targets are sharpened
    (`sharpen_temperature`) and balanced by Sinkhorn, and the loss is the
    cross-entropy of the anchors against them plus `me_max_weight` times
    ME-MAX, which keeps the mean assignment spread over the prototypes
    (`keras_ssl.losses.prototypes.msn`).

    Args:
        encoder: a keras_ssl `ViT`.
        num_prototypes: `K` (MSN: 1024).
        hidden_dim, output_dim: head widths (MSN: 2048, 256).
        temperature: softmax temperature of the assignments (MSN: 0.1).
        sharpen_temperature: target sharpening `T` (MSN: 0.25).
        me_max_weight: weight of ME-MAX (MSN: 1).
        sinkhorn_iterations: Sinkhorn rounds on the targets (MSN: 3); 0: off.
        label_smoothing: of the prototype labels, in [0, 1) (MSN: 0).
        patch_drop: fraction of the anchor view's patches dropped (MSN: 0.15);
            `floor(N * (1 - patch_drop))` are kept, a new subset per image (the
            official draws one subset per batch).
        momentum: target EMA momentum at step 0 (MSN: 0.996), cosine to
            `momentum_end` (the official: linear to 1 over 1.25 times the run).
        views: a `MultiCrop`, target view first; defaults to `msn_views`.
        **kwargs: `SSLModel` options (`image_size`, `seed`, ...).

    Example:
        >>> encoder = keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=32, depth=1, heads=2)
        >>> model = keras_ssl.MSN(encoder, num_prototypes=16, hidden_dim=16, output_dim=8,
        ...             views=keras_ssl.views.msn_views(16, local_size=8, num_local=2))
        >>> model.num_kept   # of the anchor's 16 patches
        13
        >>> model.compile(optimizer=keras.optimizers.AdamW(1e-3))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> sorted(history.history)
        ['cross_entropy', 'loss', 'me_max', 'z_std']
    """

    local_views = True
    view_recipe = staticmethod(msn_views)
    momentum_pairs = (("encoder", "target_encoder"), ("head", "target_head"))
    evaluated_encoder = "target_encoder"  # logistic_eval.py / linear_eval.py load checkpoint['target_encoder']
    gathered_outputs = ("anchors", "target")
    monitored_output = "target"
    loss_terms = ("cross_entropy", "me_max")
    default_backbone = "vit_tiny"
    token_encoder = True
    encodes_token_subsets = True
    vit_init = "msn"  # src/deit.py _init_weights: the patch conv kaiming_normal_(fan_in), Linear as timm
    vit_options = {"pixel_norm": "imagenet"}  # src/data_manager.py: transforms.Normalize (ImageNet)

    def __init__(
        self,
        encoder,
        *,
        num_prototypes=1024,
        hidden_dim=2048,
        output_dim=256,
        temperature=0.1,
        sharpen_temperature=0.25,
        me_max_weight=1.0,
        sinkhorn_iterations=3,
        label_smoothing=0.0,
        patch_drop=0.15,
        momentum=0.996,
        momentum_end=1.0,
        **kwargs,
    ):
        if not 0.0 <= patch_drop < 1.0:
            raise ValueError(f"`patch_drop` must be in [0, 1), got {patch_drop}.")
        for name, value in (("temperature", temperature), ("sharpen_temperature", sharpen_temperature)):
            if not value > 0:
                raise ValueError(f"`{name}` must be > 0, got {value}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing}.")
        super().__init__(encoder, momentum=momentum, momentum_end=momentum_end, **kwargs)
        self.num_prototypes, self.hidden_dim, self.output_dim = int(num_prototypes), int(hidden_dim), int(output_dim)
        self.temperature, self.sharpen_temperature = float(temperature), float(sharpen_temperature)
        self.me_max_weight, self.sinkhorn_iterations = float(me_max_weight), int(sinkhorn_iterations)
        self.label_smoothing, self.patch_drop = float(label_smoothing), float(patch_drop)
        num_patches = (self.image_size // encoder.patch_size) ** 2
        # The official count: floor, not round.
        self.num_kept = max(1, int(math.floor(num_patches * (1.0 - self.patch_drop))))
        self.patch_dropper = None
        if self.num_kept < num_patches:
            self.patch_dropper = RandomMasking(1.0 - self.num_kept / num_patches, seed=self.next_seed())
        self.head = MSNHead(self.hidden_dim, self.output_dim)
        self.head.build((None, self.feature_dim))
        bound = 1.0 / math.sqrt(self.output_dim)  # the official uniform initialisation
        self.prototypes = self.add_weight(
            name="prototypes",
            shape=(self.num_prototypes, self.output_dim),
            initializer=keras.initializers.RandomUniform(-bound, bound, seed=self.next_seed()),
        )

    def masked_features(self, images, training):
        """Features of `images` with `num_kept` random patch tokens per image (class token always kept)."""
        tokens = self.encoder.embed_patches(images, training=training)
        if self.patch_dropper is not None:
            tokens = self.patch_dropper(tokens)[0]
        x = self.encoder.encode_tokens(tokens, training=training)
        return x[:, 0] if self.encoder.pool == "cls" else ops.mean(x[:, 1:], axis=1)

    def ssl_forward(self, views, training):
        anchors = [self.head(self.masked_features(views[1], training), training=training)]
        if len(views) > 2:
            # One head call over all focal crops: the official batch statistics.
            anchors += self.embed(views[2:], self.head, training, together=True)
        (h,) = self.encode(views[:1], training, encoder=self.target_encoder)
        return {"anchors": anchors, "target": ops.stop_gradient(self.target_head(h, training=training))}

    def compute_ssl_loss(self, outputs):
        cross_entropy, me_max = msn(
            outputs["anchors"],
            outputs["target"],
            self.prototypes,
            self.temperature,
            self.sharpen_temperature,
            self.sinkhorn_iterations,
            self.label_smoothing,
        )
        return cross_entropy + self.me_max_weight * me_max, {"cross_entropy": cross_entropy, "me_max": me_max}
