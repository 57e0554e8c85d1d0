"""Float64 NumPy ports of the official I-JEPA code (github.com/facebookresearch/ijepa), for the tests.

Written from src/masks/multiblock.py (MaskCollator), src/masks/utils.py (apply_masks),
src/models/vision_transformer.py (get_2d_sincos_pos_embed) and src/train.py (the loss), with
torch's RNG replaced by NumPy's. Independent of keras_ssl.
"""

import math

import numpy as np


# ---------------------------------------------------------------- src/models/vision_transformer.py
def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=float) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size):
    grid_h = np.arange(grid_size, dtype=float)
    grid_w = np.arange(grid_size, dtype=float)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


# ---------------------------------------------------------------- src/masks/multiblock.py
class MaskCollator:
    """The official multi-block collator; `__call__(batch_size)` returns `(masks_enc, masks_pred)`,
    lists (one per block) of `(B, K)` index arrays, as the official one."""

    def __init__(
        self,
        grid=14,
        enc_mask_scale=(0.85, 1.0),
        pred_mask_scale=(0.15, 0.2),
        aspect_ratio=(0.75, 1.5),
        nenc=1,
        npred=4,
        min_keep=10,
        seed=0,
    ):
        self.height = self.width = grid
        self.enc_mask_scale, self.pred_mask_scale, self.aspect_ratio = enc_mask_scale, pred_mask_scale, aspect_ratio
        self.nenc, self.npred, self.min_keep = nenc, npred, min_keep
        self.rng = np.random.default_rng(seed)

    def sample_block_size(self, rand, scale, aspect_ratio_scale):
        mask_scale = scale[0] + rand * (scale[1] - scale[0])
        max_keep = int(self.height * self.width * mask_scale)
        aspect_ratio = aspect_ratio_scale[0] + rand * (aspect_ratio_scale[1] - aspect_ratio_scale[0])
        h = int(round(math.sqrt(max_keep * aspect_ratio)))
        w = int(round(math.sqrt(max_keep / aspect_ratio)))
        while h >= self.height:
            h -= 1
        while w >= self.width:
            w -= 1
        return h, w

    def sample_block_mask(self, size, acceptable_regions=None):
        h, w = size
        tries, timeout = 0, 20
        while True:
            top = self.rng.integers(0, self.height - h)
            left = self.rng.integers(0, self.width - w)
            mask = np.zeros((self.height, self.width), np.int32)
            mask[top : top + h, left : left + w] = 1
            if acceptable_regions is not None:
                for k in range(max(len(acceptable_regions) - tries, 0)):
                    mask *= acceptable_regions[k]
            ids = np.nonzero(mask.flatten())[0]
            if len(ids) > self.min_keep:
                break
            timeout -= 1
            if timeout == 0:
                tries, timeout = tries + 1, 20
        complement = np.ones((self.height, self.width), np.int32)
        complement[top : top + h, left : left + w] = 0
        return ids, complement

    def __call__(self, batch_size):
        p_size = self.sample_block_size(self.rng.random(), self.pred_mask_scale, self.aspect_ratio)
        e_size = self.sample_block_size(self.rng.random(), self.enc_mask_scale, (1.0, 1.0))
        preds, encs = [], []
        min_pred = min_enc = self.height * self.width
        for _ in range(batch_size):
            masks_p, masks_c = [], []
            for _ in range(self.npred):
                ids, complement = self.sample_block_mask(p_size)
                masks_p.append(ids)
                masks_c.append(complement)
                min_pred = min(min_pred, len(ids))
            preds.append(masks_p)
            masks_e = []
            for _ in range(self.nenc):
                ids, _ = self.sample_block_mask(e_size, acceptable_regions=masks_c)
                masks_e.append(ids)
                min_enc = min(min_enc, len(ids))
            encs.append(masks_e)
        masks_pred = [np.stack([p[j][:min_pred] for p in preds]) for j in range(self.npred)]
        masks_enc = [np.stack([e[j][:min_enc] for e in encs]) for j in range(self.nenc)]
        return masks_enc, masks_pred


# ---------------------------------------------------------------- src/masks/utils.py, src/train.py
def apply_masks(x, masks):
    return np.concatenate([np.take_along_axis(x, m[..., None], axis=1) for m in masks], axis=0)


def layer_norm(x, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)


def smooth_l1_loss(z, h):
    d = np.abs(z - h)
    return np.mean(np.where(d < 1.0, 0.5 * d**2, d - 0.5))


def ijepa_loss(z, h, masks_pred, kind="smooth_l1"):
    """train.py: `z` `(M * B, K, D)` predictions (block-major, as the official predictor), `h`
    `(B, N, D)` target-encoder patch tokens, `masks_pred` list of `M` `(B, K)` index arrays."""
    targets = apply_masks(layer_norm(np.asarray(h, np.float64)), masks_pred)
    z = np.asarray(z, np.float64)
    return smooth_l1_loss(z, targets) if kind == "smooth_l1" else np.mean((z - targets) ** 2)
