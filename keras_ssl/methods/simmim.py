"""SimMIM, a simple framework for masked image modeling (Xie et al. 2022)."""

import keras
import numpy as np
from keras import ops

from keras_ssl import initializers
from keras_ssl.backbones.vit import IMAGENET_MEAN, IMAGENET_STD
from keras_ssl.engine import SSLModel
from keras_ssl.layers.masking import encoder_pixels, standardise, unpatchify
from keras_ssl.layers.random_masks import RandomSquareMasking, random_square_masks
from keras_ssl.losses.reconstruction import simmim_reconstruction
from keras_ssl.views.recipes import simmim_views


@keras.saving.register_keras_serializable(package="keras_ssl")
class SimMIM(SSLModel):
    """SimMIM: predict the raw pixels of randomly masked squares with a linear head.

    Squares of `mask_patch_size` pixels are masked at random (exactly
    `ceil(mask_ratio * count)` per image); a learned mask token replaces the
    embedding of every masked patch before the positions are added, and the
    ViT encodes all tokens. A linear decoder maps each patch token to its
    `p * p * C` pixels (the official 1x1 conv and pixel shuffle), and the
    loss is the L1 error on the masked pixels only.

    Args:
        encoder: a keras_ssl `ViT` (or any encoder with its token interface,
            `engine.contract.TOKEN_INTERFACE`). Its class token gets no loss: a
            mean-pooling ViT (`pool="mean"`, as the official fine-tuning) gives
            the trained features.
        mask_patch_size: side of the masked squares, a multiple of the patch
            size dividing the image; default: 32 (the paper's) for images of
            128 px or more, else twice the patch size.
        mask_ratio: fraction of squares masked (paper: 0.6).
        imagenet_targets: None (default): reconstruct the images as the
            encoder sees them, after its `pixel_norm` (the official targets:
            the loader's ImageNet-normalised images, which the CLI's ViT
            standardises as); True: ImageNet-normalised pixels whatever the
            encoder's (3 channels); False: pixels in [0, 1].
        views: a `OneView`; defaults to `simmim_views`.
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, ...).

    Example:
        >>> encoder = keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=32, depth=1, heads=2, pool="mean")
        >>> model = keras_ssl.SimMIM(encoder, mask_patch_size=8, mask_ratio=0.6)
        >>> model.compile(optimizer=keras.optimizers.AdamW(1e-4, weight_decay=0.05))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> masked, reconstructed = model.reconstruct(x_test[:8], seed=0)
        >>> masked.shape, reconstructed.shape
        ((8, 16, 16, 3), (8, 16, 16, 3))
    """

    global_views = 1
    view_recipe = staticmethod(simmim_views)
    gathered_outputs = ("target", "pred", "mask")
    local_outputs = ("features",)
    monitored_output = "features"
    default_backbone = "vit_tiny"
    token_encoder = True
    vit_init = "beit"  # models/simmim.py: BEiT's init, trunc_normal_ cut at one std, fix_init_weight
    # config.py MODEL.VIT.INIT_VALUES 0.1, USE_APE False, USE_SHARED_RPB True (BEiT's shared relative
    # position bias); simmim_pretrain__vit_base__img224__800ep.yaml DROP_PATH_RATE 0.1; the fine-tuning
    # config's USE_MEAN_POOLING True: features are a mean of patch tokens, as the fine-tuning's (which
    # norms the mean with a new norm, where we take the mean of the normed tokens); the class token gets no loss
    # data/data_simmim.py: T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    vit_options = {
        "layerscale": 0.1,
        "drop_path": 0.1,
        "positions": "relative",
        "pool": "mean",
        "pixel_norm": "imagenet",
    }

    def __init__(self, encoder, *, mask_patch_size=None, mask_ratio=0.6, imagenet_targets=None, **kwargs):
        super().__init__(encoder, **kwargs)
        self.patch_size, channels = int(encoder.patch_size), self.image_shape[-1]
        if mask_patch_size is None:
            mask_patch_size = 32 if self.image_size >= 128 else 2 * self.patch_size
        if imagenet_targets and channels != 3:
            raise ValueError(f"imagenet_targets needs 3-channel images, got {channels} channels.")
        self.masking = RandomSquareMasking(
            self.image_size, self.patch_size, mask_patch_size, mask_ratio, self.next_seed()
        )
        self.mask_patch_size, self.mask_ratio = int(mask_patch_size), float(mask_ratio)
        self.imagenet_targets = None if imagenet_targets is None else bool(imagenet_targets)
        # VisionTransformerForSimMIM draws its mask token with BEiT's normal, cut at one std.
        init = initializers.CutNormal(0.02)
        self.mask_token = self.add_weight(name="mask_token", shape=(1, 1, encoder.dim), initializer=init)
        # The official decoder, a 1x1 Conv2d, keeps PyTorch's default kernel and bias.
        self.decoder = keras.layers.Dense(
            self.patch_size**2 * channels,
            kernel_initializer=initializers.torch_default(),
            bias_initializer=initializers.torch_bias(encoder.dim),
            name="decoder",
        )
        self.decoder.build((None, (self.image_size // self.patch_size) ** 2, encoder.dim))

    def _targets(self, images, inverse=False):
        """The reconstruction target of `images` in [0, 1] (`inverse`: back to them), per `imagenet_targets`."""
        if self.imagenet_targets is None:
            return encoder_pixels(self.encoder, images, inverse)
        if not self.imagenet_targets:
            return images
        return standardise(images, (IMAGENET_MEAN, IMAGENET_STD), inverse)

    def _masked_forward(self, images, training, seed=None):
        if seed is None:
            mask = self.masking(images)
        else:
            sizes = (self.image_size, self.patch_size, self.mask_patch_size, self.mask_ratio)
            mask = random_square_masks(ops.shape(images)[0], *sizes, seed=seed)
        tokens = self.encoder.embed_patches(images, training=training, mask=mask, mask_token=self.mask_token)
        latent = self.encoder.encode_tokens(tokens, training=training)[:, 1:]
        size, grid = self.image_size, self.image_size // self.patch_size
        pred = unpatchify(self.decoder(latent), self.patch_size, size, self.image_shape[-1])
        target = self._targets(ops.cast(images, "float32"))
        # Mean-pooled patch tokens: the features the decoder reads (the class token gets no loss).
        features = ops.mean(latent, axis=1)
        return {"target": target, "pred": pred, "mask": ops.reshape(mask, (-1, grid, grid)), "features": features}

    def ssl_forward(self, views, training):
        return self._masked_forward(views[0], training)

    def compute_ssl_loss(self, outputs):
        return simmim_reconstruction(outputs["target"], outputs["pred"], outputs["mask"]), {}

    def reconstruct(self, images, seed=None):
        """Masks `images` at random and reconstructs them (no augmentation).

        Args:
            images: `(B, H, W, C)` pixels as `fit` takes them (resized to
                `image_size` if needed).
            seed: int for a reproducible mask; default: the model's masking layer.

        Returns:
            `(masked, reconstructed)` float NumPy images in [0, 1]: masked
            squares grey, and the visible pixels pasted over the prediction.
        """
        x = self.preprocess(images)
        if tuple(x.shape[1:3]) != (self.image_size, self.image_size):
            x = ops.image.resize(x, (self.image_size, self.image_size))
        out = self._masked_forward(x, training=False, seed=seed)
        pred, p = self._targets(out["pred"], inverse=True), self.patch_size
        m = ops.repeat(ops.repeat(out["mask"], p, axis=1), p, axis=2)[..., None]
        masked, recon = x * (1 - m) + 0.5 * m, x * (1 - m) + pred * m
        return tuple(np.clip(ops.convert_to_numpy(a), 0.0, 1.0) for a in (masked, recon))
