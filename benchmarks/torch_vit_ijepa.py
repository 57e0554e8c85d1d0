"""Plain-PyTorch I-JEPA reference (Assran et al. 2023), for the parity benchmark and tests.

Written from facebookresearch/ijepa (`src/train.py`, `src/helper.py`, `src/models/vision_transformer.py`,
`src/masks/multiblock.py`, `src/masks/utils.py`, `src/utils/tensors.py`, `configs/in1k_vith14_ep300.yaml`),
never imported from keras_ssl. The transformer block is torch_vit's `Block` (timm's, LayerNorm eps 1e-6,
fused qkv with bias, exact GELU), which is the official `Block` at drop rates 0.

- `Encoder`: the official `VisionTransformer`: patch conv, fixed 2D sine-cosine positions, no class
  token, blocks, norm; `forward(images, masks)` keeps the patches at `masks` (`apply_masks`).
- `Predictor`: the official `VisionTransformerPredictor` (embed, sine-cosine positions, one mask token
  plus each target patch's position, blocks, norm, projection of the mask tokens' outputs back).
- `IJEPA`: train.py's step on given masks: targets `F.layer_norm` of the target encoder on all patches
  (no affine, eps 1e-5), taken at each target block; loss `F.smooth_l1_loss` (mean over every element
  of every block, all blocks one size) or the paper's L2; `momentum_update` and `momentum_schedule`.
- `MaskCollator`: multiblock.py's mask law (one target size and one context size per batch; target
  corners `randint(0, H - h)`; the context a square block minus every target, re-drawn while it keeps
  `<= min_keep` patches; every list cut to the batch's shortest).
- `keras_variables`, `keras_arrays`, `from_keras`, `assign_keras`: the weights in keras_ssl's layout,
  keys `enc/...` (the context encoder), `tgt/...` (the EMA target encoder), `pred/...` (the predictor).

keras_ssl's I-JEPA against facebookresearch/ijepa, as this reference found them on 2026-12-07
(tests/test_parity_ijepa.py shows each by value):

1. Initialisation. helper.py's `init_model` re-draws every Linear weight N(0, 0.02^2) after the
   models' constructors ran `fix_init_weight`, undoing it: the official attention and MLP output
   kernels keep std 0.02 in every block. keras_ssl's `JEPAPredictor` (and the `"ijepa"` ViT init)
   divide them by sqrt(2 (i + 1)): std 0.0141 in block 0, 0.0041 in block 11 of 12
   (measured at width 64: 0.0141, 0.0099 against 0.0202, 0.0199).
2. Predictor heads: the official passes the encoder's `num_heads` (ViT-H: 16, head width 24 at
   384); keras_ssl the largest divisor of the width up to width / 32 (384: 12). Equal for ViT-B
   (12), not for ViT-S (6 against 12), ViT-H (16 against 12), ViT-tiny (3 against 6 at 192).
3. Predictor width and depth defaults: the official configs 384 wide for every encoder (ViT-tiny's
   192 too) and 12 deep (helper.py's default 6); keras_ssl `min(384, encoder.dim)` and 6.
4. `min_keep`: the official re-draws a context with `<= min_keep` (configs: 10) patches, and after
   20 failures drops the last target's exclusion; keras_ssl keeps any context: on an 8 x 8 grid with
   4 targets 5.0 % of keras_ssl's contexts hold <= 8 patches (the fewest 7), the official's none.
   The official also re-draws targets of `<= min_keep` patches, with no way out: it hangs where
   every target is that small (the configs' 10 on an 8 x 8 grid, 9-patch targets; any on 4 x 4),
   keras_ssl has no such bound. A 14 x 14 grid (the paper's, targets >= 29) meets neither.
5. Block sizes: the same function of the one uniform draw (floor of N x scale, rounded sides,
   at most the grid side minus one); keras_ssl clamps a side at 1 where the official loops forever.

The same as the official: the loss (smooth L1 with beta 1, mean over the valid patches and
features = `F.smooth_l1_loss`'s mean, as every target block has one size), the target's layer norm,
the predictor's positions (sine-cosine of the predictor width), the context in raster order cut to
the batch's shortest, the linear EMA 0.996 -> 1 and the target encoder on all patches.
"""

import copy
import math

import torch
import torch.nn.functional as F
import torch_vit
from torch import nn
from torch_vit import _DENSE, Block, _block_entries, _pixel_stats, sincos_table


def apply_masks(x, masks):
    """masks/utils.py: `x` `(B, N, D)`, a list of `(B, K)` index tensors -> `(len(masks) B, K, D)`, mask-major."""
    return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, x.size(-1))) for m in masks], dim=0)


def repeat_interleave_batch(x, batch, repeat):
    """utils/tensors.py: each run of `batch` rows repeated `repeat` times in place."""
    chunks = [x[i * batch : (i + 1) * batch] for i in range(len(x) // batch)]
    return torch.cat([c for c in chunks for _ in range(repeat)], dim=0)


def _init_linear_and_norm(m, std=0.02):
    # helper.py's `init_weights`, run after the constructors (it overwrites `fix_init_weight`).
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=std, a=-2.0, b=2.0)  # the official cut is absolute, +-2
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _fix_init_weight(blocks):
    for layer_id, block in enumerate(blocks, start=1):
        block.proj.weight.data.div_(math.sqrt(2.0 * layer_id))
        block.fc2.weight.data.div_(math.sqrt(2.0 * layer_id))


class Encoder(nn.Module):
    """vision_transformer.py's `VisionTransformer`: NCHW images in [0, 1] -> `(B, N or K, dim)` tokens."""

    def __init__(self, image_size=224, patch_size=16, channels=3, dim=768, depth=12, heads=12, pixel_norm="imagenet"):
        super().__init__()
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        self.dim, self.grid_size = dim, image_size // patch_size
        stats = _pixel_stats(pixel_norm, channels)  # train.py's loader: transforms.Normalize
        self.register_buffer("pixel_mean", None if stats is None else stats[0])
        self.register_buffer("pixel_std", None if stats is None else stats[1])
        self.patch_embed = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
        table = torch.from_numpy(sincos_table(dim, self.grid_size))[None]
        self.pos_embed = nn.Parameter(table, requires_grad=False)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(_init_linear_and_norm)
        nn.init.trunc_normal_(self.patch_embed.weight, std=0.02, a=-2.0, b=2.0)
        nn.init.zeros_(self.patch_embed.bias)
        _fix_init_weight(self.blocks)

    def forward(self, images, masks=None):
        if self.pixel_mean is not None:
            images = (images - self.pixel_mean) / self.pixel_std
        x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed
        if masks is not None:
            x = apply_masks(x, masks if isinstance(masks, list) else [masks])
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class Predictor(nn.Module):
    """vision_transformer.py's `VisionTransformerPredictor` (mlp ratio 4, qkv bias, LayerNorm eps 1e-6)."""

    def __init__(self, num_patches, embed_dim=768, dim=384, depth=6, heads=12):
        super().__init__()
        self.predictor_embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        table = torch.from_numpy(sincos_table(dim, int(num_patches**0.5)))[None]
        self.predictor_pos_embed = nn.Parameter(table, requires_grad=False)
        self.predictor_blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.predictor_norm = nn.LayerNorm(dim, eps=1e-6)
        self.predictor_proj = nn.Linear(dim, embed_dim)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-2.0, b=2.0)
        self.apply(_init_linear_and_norm)
        _fix_init_weight(self.predictor_blocks)

    def forward(self, x, masks_x, masks):
        """`x` `(len(masks_x) B, K, embed_dim)` -> `(len(masks) len(masks_x) B, Kt, embed_dim)`, mask-major."""
        masks_x = masks_x if isinstance(masks_x, list) else [masks_x]
        masks = masks if isinstance(masks, list) else [masks]
        batch = len(x) // len(masks_x)
        x = self.predictor_embed(x)
        x = x + apply_masks(self.predictor_pos_embed.repeat(batch, 1, 1), masks_x)
        n_context = x.shape[1]
        pos = apply_masks(self.predictor_pos_embed.repeat(batch, 1, 1), masks)
        pos = repeat_interleave_batch(pos, batch, repeat=len(masks_x))
        x = torch.cat([x.repeat(len(masks), 1, 1), self.mask_token + pos], dim=1)
        for block in self.predictor_blocks:
            x = block(x)
        return self.predictor_proj(self.predictor_norm(x)[:, n_context:])


class IJEPA(nn.Module):
    """train.py's I-JEPA step with keras_ssl IJEPA's arguments (`loss`: `"smooth_l1"`, official, or `"l2"`).

    `init="official"`: helper.py's `init_model` re-draws every Linear after the constructors, which
    undoes `fix_init_weight`; `"rescaled"` keeps it (keras_ssl's).
    """

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        channels=3,
        dim=768,
        depth=12,
        heads=12,
        predictor_dim=384,
        predictor_depth=6,
        predictor_heads=None,
        loss="smooth_l1",
        pixel_norm="imagenet",
        init="official",
    ):
        super().__init__()
        if loss not in ("smooth_l1", "l2") or init not in ("official", "rescaled"):
            raise ValueError(f"loss 'smooth_l1' or 'l2', init 'official' or 'rescaled'; got {loss!r}, {init!r}")
        self.loss = loss
        self.encoder = Encoder(image_size, patch_size, channels, dim, depth, heads, pixel_norm)
        n = self.encoder.grid_size**2
        # helper.py: the predictor takes the encoder's head count.
        self.predictor = Predictor(n, dim, predictor_dim, predictor_depth, predictor_heads or heads)
        if init == "official":
            self.encoder.apply(_init_linear_and_norm)
            self.predictor.apply(_init_linear_and_norm)
        self.target_encoder = copy.deepcopy(self.encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad = False

    @classmethod
    def like(cls, keras_ijepa, **kwargs):
        """A reference with a keras_ssl `IJEPA`'s sizes (its own weights: `from_keras` copies)."""
        vit, pred = keras_ijepa.encoder, keras_ijepa.predictor
        if vit.class_token or vit.num_registers or vit.positions != "sincos":
            raise ValueError("the official encoder has no class token or registers and sine-cosine positions")
        config = vit.get_config()
        sizes = {k: config[k] for k in ("image_size", "patch_size", "channels", "dim", "depth", "heads", "pixel_norm")}
        return cls(
            **sizes,
            predictor_dim=pred.dim,
            predictor_depth=pred.depth,
            predictor_heads=pred.heads,
            loss=keras_ijepa.loss,
            **kwargs,
        )

    @torch.no_grad()
    def targets(self, images, masks_pred, repeat=1):
        """forward_target: layer-normed target tokens at each block, `(M B, Kt, D)`."""
        h = self.target_encoder(images)
        h = F.layer_norm(h, (h.size(-1),))
        return repeat_interleave_batch(apply_masks(h, masks_pred), len(h), repeat=repeat)

    def predictions(self, images, masks_enc, masks_pred):
        """forward_context: `(M B, Kt, D)`."""
        return self.predictor(self.encoder(images, masks_enc), masks_enc, masks_pred)

    def loss_fn(self, z, h):
        return F.smooth_l1_loss(z, h) if self.loss == "smooth_l1" else F.mse_loss(z, h)

    def forward(self, images, masks_enc, masks_pred):
        """`masks_enc`, `masks_pred`: lists of `(B, K)` index tensors -> `(loss, predictions, targets)`."""
        masks_enc = masks_enc if isinstance(masks_enc, list) else [masks_enc]
        masks_pred = masks_pred if isinstance(masks_pred, list) else [masks_pred]
        h = self.targets(images, masks_pred, repeat=len(masks_enc))
        z = self.predictions(images, masks_enc, masks_pred)
        return self.loss_fn(z, h), z, h

    @torch.no_grad()
    def momentum_update(self, m):
        """train.py step 3, after the optimiser's step: `target = m target + (1 - m) encoder`."""
        for q, k in zip(self.encoder.parameters(), self.target_encoder.parameters()):
            k.mul_(m).add_((1.0 - m) * q.detach())


def momentum_schedule(ema=(0.996, 1.0), steps=1):
    """train.py's `momentum_scheduler`: linear over `steps` (`ipe * num_epochs * ipe_scale`), `steps + 1` values."""
    return [ema[0] + i * (ema[1] - ema[0]) / steps for i in range(int(steps) + 1)]


class MaskCollator:
    """multiblock.py's `MaskCollator` masks (no images): `__call__(batch_size) -> (masks_enc, masks_pred)`,
    lists of `(B, K)` int64 tensors. Paper/config: 4 targets (0.15, 0.2), aspect (0.75, 1.5), one
    context (0.85, 1.0), min_keep 10. `generator` drives the corners (the official uses the global RNG)."""

    def __init__(
        self,
        grid_size=14,
        enc_mask_scale=(0.85, 1.0),
        pred_mask_scale=(0.15, 0.2),
        aspect_ratio=(0.75, 1.5),
        nenc=1,
        npred=4,
        min_keep=10,
        allow_overlap=False,
        seed=0,
    ):
        self.height = self.width = grid_size
        self.enc_mask_scale, self.pred_mask_scale, self.aspect_ratio = enc_mask_scale, pred_mask_scale, aspect_ratio
        self.nenc, self.npred, self.min_keep, self.allow_overlap = nenc, npred, min_keep, allow_overlap
        self.step, self.generator = -1, torch.Generator().manual_seed(seed + 1)
        self.relaxed = 0  # how often a context constraint had to be dropped

    def block_size(self, u, scale, aspect):
        """`_sample_block_size` for the uniform draw `u` (one draw sets scale and aspect)."""
        keep = int(self.height * self.width * (scale[0] + u * (scale[1] - scale[0])))
        ratio = aspect[0] + u * (aspect[1] - aspect[0])
        h, w = int(round(math.sqrt(keep * ratio))), int(round(math.sqrt(keep / ratio)))
        return min(h, self.height - 1), min(w, self.width - 1)

    def block_mask(self, size, acceptable=None):
        h, w = size
        tries, timeout = 0, 20
        while True:
            top = int(torch.randint(0, self.height - h, (1,), generator=self.generator))
            left = int(torch.randint(0, self.width - w, (1,), generator=self.generator))
            mask = torch.zeros((self.height, self.width), dtype=torch.int32)
            mask[top : top + h, left : left + w] = 1
            for region in (acceptable or [])[: max(len(acceptable or []) - tries, 0)]:
                mask *= region
            ids = torch.nonzero(mask.flatten()).squeeze(-1)  # raster order
            if len(ids) > self.min_keep:
                break
            timeout -= 1
            if timeout == 0:
                tries, timeout = tries + 1, 20
                self.relaxed += 1
        complement = torch.ones((self.height, self.width), dtype=torch.int32)
        complement[top : top + h, left : left + w] = 0
        return ids, complement

    def __call__(self, batch_size):
        self.step += 1
        g = torch.Generator().manual_seed(self.step)  # the per-batch sizes: seeded by the step count
        p_size = self.block_size(torch.rand(1, generator=g).item(), self.pred_mask_scale, self.aspect_ratio)
        e_size = self.block_size(torch.rand(1, generator=g).item(), self.enc_mask_scale, (1.0, 1.0))
        preds, encs = [], []
        for _ in range(batch_size):
            masks, complements = zip(*[self.block_mask(p_size) for _ in range(self.npred)])
            preds.append(masks)
            acceptable = None if self.allow_overlap else list(complements)
            encs.append([self.block_mask(e_size, acceptable)[0] for _ in range(self.nenc)])
        keep_p = min(len(m) for ms in preds for m in ms)
        keep_e = min(len(m) for ms in encs for m in ms)
        masks_enc = [torch.stack([ms[i][:keep_e] for ms in encs]) for i in range(self.nenc)]
        masks_pred = [torch.stack([ms[i][:keep_p] for ms in preds]) for i in range(self.npred)]
        return masks_enc, masks_pred


# ------------------------------------------------------------------ keras_ssl's layout


def _encoder_entries(prefix, enc):
    g, d = enc.grid_size, enc.dim
    yield f"{prefix}/patch_embed/kernel", enc.patch_embed.weight, "conv"
    yield f"{prefix}/patch_embed/bias", enc.patch_embed.bias, None
    yield f"{prefix}/pos_embed/positions", enc.pos_embed, (1, g, g, d)
    for i, block in enumerate(enc.blocks):
        yield from _block_entries(f"{prefix}/block_{i}", block)
    yield f"{prefix}/norm/gamma", enc.norm.weight, None
    yield f"{prefix}/norm/beta", enc.norm.bias, None


def _entries(module):
    """`(key, parameter, kind)`: kind "dense", "conv" or a Keras shape (torch_vit's `_to_keras`)."""
    yield from _encoder_entries("enc", module.encoder)
    yield from _encoder_entries("tgt", module.target_encoder)
    p = module.predictor
    yield "pred/mask_token", p.mask_token, None
    yield "pred/embed/kernel", p.predictor_embed.weight, "dense"
    yield "pred/embed/bias", p.predictor_embed.bias, None
    for i, block in enumerate(p.predictor_blocks):
        yield from _block_entries(f"pred/block_{i}", block)
    yield "pred/norm/gamma", p.predictor_norm.weight, None
    yield "pred/norm/beta", p.predictor_norm.bias, None
    yield "pred/proj/kernel", p.predictor_proj.weight, "dense"
    yield "pred/proj/bias", p.predictor_proj.bias, None


def keras_variables(model):
    """`{key: keras Variable}` of a keras_ssl `IJEPA` (context encoder, target encoder, predictor)."""
    out = {}

    def add_block(prefix, block):
        for name in ("norm1", "norm2"):
            out[f"{prefix}/{name}/gamma"], out[f"{prefix}/{name}/beta"] = getattr(block, name).weights
        for name in _DENSE:
            out[f"{prefix}/{name}/kernel"], out[f"{prefix}/{name}/bias"] = getattr(block, name).weights

    for prefix, vit in (("enc", model.encoder), ("tgt", model.target_encoder)):
        out[f"{prefix}/patch_embed/kernel"] = vit.patch_embed.projection.kernel
        out[f"{prefix}/patch_embed/bias"] = vit.patch_embed.projection.bias
        out[f"{prefix}/pos_embed/positions"] = vit.pos_embed.positions
        for i, block in enumerate(vit.blocks):
            add_block(f"{prefix}/block_{i}", block)
        out[f"{prefix}/norm/gamma"], out[f"{prefix}/norm/beta"] = vit.norm.weights
    p = model.predictor
    out["pred/mask_token"] = p.mask_token
    out["pred/embed/kernel"], out["pred/embed/bias"] = p.embed.weights
    for i, block in enumerate(p.blocks):
        add_block(f"pred/block_{i}", block)
    out["pred/norm/gamma"], out["pred/norm/beta"] = p.norm.weights
    out["pred/proj/kernel"], out["pred/proj/bias"] = p.proj.weights
    return out


def from_keras(module, model):
    """Copies a keras_ssl `IJEPA`'s encoders and predictor into the reference `IJEPA`.

    keras_ssl's predictor keeps its positions outside the weights: the reference's own table stays.
    """
    torch_vit.from_keras(module, model, (_entries, keras_variables))


def keras_arrays(module):
    """The reference's weights as `{key: float32 array}` in keras_ssl's shapes (`assign_keras` loads them)."""
    return torch_vit.keras_arrays(module, (_entries, keras_variables))


def assign_keras(model, arrays):
    """Assigns `keras_arrays` output into a keras_ssl `IJEPA`; every variable of the layout must be given."""
    torch_vit.assign_keras(model, arrays, (_entries, keras_variables))
