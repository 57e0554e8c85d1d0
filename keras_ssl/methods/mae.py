"""MAE, masked autoencoders (He et al. 2022)."""

import keras
import numpy as np
from keras import ops

from keras_ssl import losses
from keras_ssl.backbones.decoders import MAEDecoder
from keras_ssl.engine import SSLModel
from keras_ssl.layers.masking import (
    RandomMasking,
    encoder_pixels,
    num_visible,
    patchify,
    random_masking,
    unpatchify,
)
from keras_ssl.views.recipes import crop_view


@keras.saving.register_keras_serializable(package="keras_ssl")
class MAE(SSLModel):
    """MAE: reconstruct the pixels of randomly masked patches.

    The ViT encoder sees only the visible patches (plus its class token);
    a light decoder gets the encoded tokens and mask tokens in the masked
    places, with fixed sine-cosine positions, and predicts each patch's pixels.
    The loss is the mean squared error on masked patches only, against the
    patches of the images as the encoder sees them (standardised by its
    `pixel_norm`, as the official loader's `Normalize` leaves them), each
    patch normalised by its own mean and variance when `norm_pix_loss`.

    Args:
        encoder: a keras_ssl `ViT` (`keras_ssl.backbones.vit_tiny(...)`).
        mask_ratio: fraction of patches masked, in (0, 1).
        decoder_dim, decoder_depth, decoder_heads: decoder size (the paper
            used 512 / 8 / 16 for ImageNet ViTs; smaller suits 32x32 images).
        norm_pix_loss: targets are per-patch normalised pixels.
        views: a `OneView`; defaults to `crop_view`, a random resized crop
            (scale 0.2-1) with a horizontal flip, MAE's only augmentation.
        **kwargs: `SSLModel` options (`image_size`, `value_range`, `seed`, ...).

    Example:
        >>> encoder = keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=32, depth=1, heads=2)
        >>> model = keras_ssl.MAE(encoder, mask_ratio=0.75, decoder_dim=16, decoder_depth=1, decoder_heads=2)
        >>> model.num_patches
        16
        >>> model.compile(optimizer=keras.optimizers.AdamW(1.5e-4, weight_decay=0.05))
        >>> history = model.fit(x_train, epochs=1, batch_size=16, verbose=0)
        >>> masked, reconstructed = model.reconstruct(x_test[:8], seed=0)
        >>> masked.shape, reconstructed.shape
        ((8, 16, 16, 3), (8, 16, 16, 3))
    """

    global_views = 1
    view_recipe = staticmethod(crop_view)
    gathered_outputs = ("target", "pred", "mask")
    default_backbone = "vit_tiny"
    token_encoder = True
    encodes_token_subsets = True
    vit_init = "mae"  # models_mae.py initialize_weights: xavier_uniform_ Linear and (flattened) patch kernels
    # models_mae.py: get_2d_sincos_pos_embed, requires_grad=False; main_pretrain.py: transforms.Normalize (ImageNet)
    vit_options = {"positions": "sincos", "pixel_norm": "imagenet"}

    def __init__(
        self,
        encoder,
        *,
        mask_ratio=0.75,
        decoder_dim=128,
        decoder_depth=2,
        decoder_heads=4,
        norm_pix_loss=True,
        **kwargs,
    ):
        if not 0 < mask_ratio < 1:
            raise ValueError(f"`mask_ratio` must be in (0, 1), got {mask_ratio}.")
        super().__init__(encoder, **kwargs)
        self.patch_size = encoder.patch_size
        if self.image_size % self.patch_size:
            raise ValueError(
                f"the encoder's patch_size {self.patch_size} does not divide image_size {self.image_size}."
            )
        self.num_patches = (self.image_size // self.patch_size) ** 2
        visible = num_visible(self.num_patches, mask_ratio)
        self.mask_ratio = float(mask_ratio)
        self.decoder_dim, self.decoder_depth = decoder_dim, decoder_depth
        self.decoder_heads, self.norm_pix_loss = decoder_heads, bool(norm_pix_loss)
        self.masking = RandomMasking(mask_ratio, seed=self.next_seed())
        channels = self.image_shape[-1]
        self.decoder = MAEDecoder(
            self.num_patches,
            self.patch_size**2 * channels,
            decoder_dim,
            decoder_depth,
            decoder_heads,
            mlp_ratio=getattr(encoder, "mlp_ratio", 4.0),  # models_mae.py's decoder blocks take the encoder's
        )
        self.decoder.build((None, 1 + visible, encoder.dim))

    def _masked_forward(self, images, training, seed=None):
        tokens = self.encoder.embed_patches(images, training=training)
        if seed is None:
            visible, mask, ids_restore = self.masking(tokens)
        else:
            visible, mask, ids_restore = random_masking(tokens, self.mask_ratio, seed)
        latent = self.encoder.encode_tokens(visible, training=training)
        return {
            # models_mae.py patchifies the images the encoder sees: after the loader's Normalize (our `pixel_norm`).
            "target": patchify(encoder_pixels(self.encoder, images), self.patch_size),
            "pred": self.decoder(latent, ids_restore, training=training),
            "mask": mask,
        }

    def ssl_forward(self, views, training):
        return self._masked_forward(views[0], training)

    def compute_ssl_loss(self, outputs):
        loss = losses.mae_reconstruction(
            outputs["target"], outputs["pred"], outputs["mask"], normalize=self.norm_pix_loss
        )
        return loss, {}

    def reconstruct(self, images, seed=None):
        """Masks `images` at random and reconstructs them (no augmentation).

        Args:
            images: `(B, H, W, C)` pixels as `fit` takes them (resized to
                `image_size` if needed).
            seed: int for a reproducible mask; default: the model's masking layer.

        Returns:
            `(masked, reconstructed)` float NumPy images in [0, 1]: masked
            patches grey, and the visible patches pasted over the prediction.
        """
        x = self.preprocess(images)
        if tuple(x.shape[1:3]) != (self.image_size, self.image_size):
            x = ops.image.resize(x, (self.image_size, self.image_size))
        out = self._masked_forward(x, training=False, seed=seed)
        target, pred, mask = out["target"], out["pred"], out["mask"][..., None]
        if self.norm_pix_loss:
            # Predictions are normalised pixels: undo it with each patch's own statistics.
            mean, std = losses.patch_statistics(target)
            pred = pred * std + mean
        size, channels = (self.image_size, self.image_size), self.image_shape[-1]
        image = lambda patches: encoder_pixels(
            self.encoder, unpatchify(patches, self.patch_size, size, channels), inverse=True
        )
        m = unpatchify(mask * ops.ones_like(target), self.patch_size, size, channels)  # 1 on masked pixels
        masked, recon = image(target) * (1 - m) + 0.5 * m, image(target * (1 - mask) + pred * mask)
        return tuple(np.clip(ops.convert_to_numpy(a), 0.0, 1.0) for a in (masked, recon))
