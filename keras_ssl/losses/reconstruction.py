"""Masked-image reconstruction: MAE's per-patch pixel loss and SimMIM's masked-pixel L1 loss."""

from keras import ops

from keras_ssl.losses.common import _check_rank


def patch_statistics(patches, eps=1e-6):
    """Per-patch mean and std of MAE's `norm_pix_loss`: unbiased variance + `eps`.

    Args:
        patches: `(B, N, P)` pixel patches.
        eps: added to the variance.

    Returns:
        `(mean, std)`, each `(B, N, 1)` float32.

    Example:
        >>> from keras_ssl.layers.masking import patchify
        >>> mean, std = keras_ssl.losses.patch_statistics(patchify(images, 4))
        >>> tuple(mean.shape), tuple(std.shape)   # (B, N, 1)
        ((8, 16, 1), (8, 16, 1))
    """
    patches = ops.cast(patches, "float32")
    n = patches.shape[-1]
    mean = ops.mean(patches, axis=-1, keepdims=True)
    # torch.var's default (MAE's forward_loss) is the unbiased variance.
    var = ops.sum(ops.square(patches - mean), axis=-1, keepdims=True) / max(n - 1, 1)
    return mean, ops.sqrt(var + eps)


def mae_reconstruction(target_patches, predicted_patches, mask, normalize=False, eps=1e-6):
    """MAE's loss: mean squared error on the masked patches only.

    Args:
        target_patches: `(B, N, P)` pixel patches of the image.
        predicted_patches: `(B, N, P)` decoder outputs.
        mask: `(B, N)`, 1 for masked (reconstructed) patches, 0 for visible.
        normalize: normalise each target patch by its mean and unbiased
            variance (`torch.var`'s default), as MAE's `norm_pix_loss`.
        eps: added to the patch variance when `normalize`.

    Returns:
        Scalar float32 loss: `sum(mean_P((pred - target)^2) * mask) / sum(mask)`
        (0 when nothing is masked).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> t, p = rng.uniform(size=(2, 16, 48)), rng.uniform(size=(2, 16, 48))
        >>> mask = np.ones((2, 16))
        >>> round(float(keras_ssl.losses.mae_reconstruction(t, p, mask)), 3)   # about 2 var(U(0, 1)) = 1/6
        0.179
        >>> loss = keras_ssl.losses.mae_reconstruction(t, p, mask, normalize=True)   # MAE's norm_pix_loss
        >>> float(keras_ssl.losses.mae_reconstruction(t, t, mask))   # a perfect prediction
        0.0
        >>> float(keras_ssl.losses.mae_reconstruction(t, p, 0 * mask))   # nothing masked
        0.0
    """
    _check_rank("target_patches", target_patches, 3)
    _check_rank("predicted_patches", predicted_patches, 3)
    _check_rank("mask", mask, 2)
    target = ops.cast(target_patches, "float32")
    if normalize:
        mean, std = patch_statistics(target, eps)
        target = (target - mean) / std
    error = ops.mean(ops.square(ops.cast(predicted_patches, "float32") - target), axis=-1)
    mask = ops.cast(mask, "float32")
    # The floor only matters when nothing is masked: 0 / tiny = 0, not NaN.
    return ops.sum(error * mask) / ops.maximum(ops.sum(mask), 1e-12)


def simmim_reconstruction(images, reconstructed, mask, eps=1e-5):
    """SimMIM's loss: the L1 error on masked pixels, per masked pixel and channel.

    `sum(|images - reconstructed| * m) / (sum(m) + eps) / C`, where `m` is
    `mask` upsampled to pixels (each cell covers `H / h` x `W / w` pixels)
    and counted once per pixel, not per channel: the official `SimMIM.forward`.

    Args:
        images: `(B, H, W, C)` target pixels.
        reconstructed: `(B, H, W, C)` predicted pixels.
        mask: `(B, h, w)`, 1 for masked cells, `h` dividing `H` and `w`
            dividing `W` (a patch grid, or the pixels themselves).
        eps: added to the masked-pixel count (official: 1e-5).

    Returns:
        Scalar float32 loss (0 when nothing is masked).

    Example:
        >>> from keras_ssl.losses.reconstruction import simmim_reconstruction
        >>> x, mask = np.zeros((2, 4, 4, 3)), np.ones((2, 2, 2))
        >>> round(float(simmim_reconstruction(x, x + 0.5, mask)), 4)   # every pixel off by 0.5
        0.5
        >>> float(simmim_reconstruction(x, x + 0.5, 0 * mask))   # nothing masked
        0.0
    """
    _check_rank("images", images, 4)
    _check_rank("reconstructed", reconstructed, 4)
    _check_rank("mask", mask, 3)
    _, height, width, channels = images.shape
    h, w = mask.shape[1], mask.shape[2]
    if tuple(reconstructed.shape[1:]) != (height, width, channels) or height % h or width % w:
        raise ValueError(
            f"need reconstructed pixels of the images' shape {tuple(images.shape)} and a mask grid dividing "
            f"them, got {tuple(reconstructed.shape)} and mask {tuple(mask.shape)}."
        )
    mask = ops.cast(mask, "float32")
    mask = ops.repeat(ops.repeat(mask, height // h, axis=1), width // w, axis=2)[..., None]
    error = ops.abs(ops.cast(images, "float32") - ops.cast(reconstructed, "float32"))
    return ops.sum(error * mask) / (ops.sum(mask) + eps) / channels
