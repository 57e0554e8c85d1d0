"""Float64 NumPy references for SimMIM, written from the official code (github.com/microsoft/SimMIM).

Never imports keras_ssl. Tensors follow the official NCHW layout inside the
references; the public functions take our NHWC arrays.
"""

import numpy as np


class MaskGeneratorRef:
    """data/data_simmim.py `MaskGenerator`, with its own `np.random.Generator`."""

    def __init__(self, input_size=192, mask_patch_size=32, model_patch_size=4, mask_ratio=0.6, seed=0):
        assert input_size % mask_patch_size == 0
        assert mask_patch_size % model_patch_size == 0
        self.rand_size = input_size // mask_patch_size
        self.scale = mask_patch_size // model_patch_size
        self.token_count = self.rand_size**2
        self.mask_count = int(np.ceil(self.token_count * mask_ratio))
        self.rng = np.random.default_rng(seed)

    def __call__(self):
        mask_idx = self.rng.permutation(self.token_count)[: self.mask_count]
        mask = np.zeros(self.token_count, dtype=int)
        mask[mask_idx] = 1
        mask = mask.reshape((self.rand_size, self.rand_size))
        return mask.repeat(self.scale, axis=0).repeat(self.scale, axis=1)


def _repeat_interleave(mask, r):
    """torch `mask.repeat_interleave(r, 1).repeat_interleave(r, 2)` on `(B, h, w)`."""
    return np.repeat(np.repeat(mask, r, axis=1), r, axis=2)


def simmim_loss_ref(x, x_rec, mask, patch_size):
    """models/simmim.py `SimMIM.forward`'s loss, given `x`, `x_rec` `(B, H, W, C)` and `mask` `(B, h, w)`.

    `mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1)`;
    `l1_loss(x, x_rec, reduction='none')`; `(loss * mask).sum() / (mask.sum() + 1e-5) / in_chans`.
    """
    x = np.asarray(x, np.float64).transpose(0, 3, 1, 2)
    x_rec = np.asarray(x_rec, np.float64).transpose(0, 3, 1, 2)
    m = _repeat_interleave(np.asarray(mask, np.float64), patch_size)[:, None]
    in_chans = x.shape[1]
    return float((np.abs(x - x_rec) * m).sum() / (m.sum() + 1e-5) / in_chans)


def simmim_loss_grads_ref(x, x_rec, mask, patch_size):
    """Gradients of `simmim_loss_ref` w.r.t. `x` and `x_rec` (NHWC): `+-sign(x - x_rec) * m / (sum(m) + eps) / C`."""
    x, x_rec = np.asarray(x, np.float64), np.asarray(x_rec, np.float64)
    m = _repeat_interleave(np.asarray(mask, np.float64), patch_size)[..., None]
    g = np.sign(x - x_rec) * m / (m.sum() + 1e-5) / x.shape[-1]
    return g, -g


def pixel_shuffle_ref(x, r):
    """torch `nn.PixelShuffle(r)` on NCHW: `out[b, c, h r + i, w r + j] = x[b, c r^2 + i r + j, h, w]`."""
    b, c, h, w = x.shape
    out = np.zeros((b, c // (r * r), h * r, w * r), x.dtype)
    for ch in range(c // (r * r)):
        for i in range(r):
            for j in range(r):
                out[:, ch, i::r, j::r] = x[:, ch * r * r + i * r + j]
    return out


def simmim_decoder_ref(tokens, weight, bias, r):
    """`SimMIM.decoder` (1x1 conv to `r^2 * 3` channels, then PixelShuffle(r)) on the patch tokens.

    `tokens` `(B, L, D)` as the official encoder's `x[:, 1:]`, reshaped to
    `(B, D, H, W)`; `weight` `(r^2 C, D)`, `bias` `(r^2 C,)`. Returns NHWC.
    """
    tokens = np.asarray(tokens, np.float64)
    b, length, d = tokens.shape
    side = int(round(length**0.5))
    z = tokens.transpose(0, 2, 1).reshape(b, d, side, side)
    conv = np.einsum("od,bdhw->bohw", weight, z) + bias[None, :, None, None]
    return pixel_shuffle_ref(conv, r).transpose(0, 2, 3, 1)
