"""Plain-PyTorch Vision Transformer, MAE and SimMIM references, for benchmarks/parity.py.

Written from facebookresearch/mae (`models_mae.py`, `util/pos_embed.py`, and the
timm 0.3.2 `PatchEmbed` and `Block` it builds on) and microsoft/SimMIM (`models/simmim.py`,
`models/vision_transformer.py` (BEiT's), `data/data_simmim.py`, `config.py`, the ViT-B
pretrain yaml), never imported from keras_ssl:

- `ViT`: what `keras_ssl.backbones.ViT` computes for the options MAE and SimMIM use: a strided
  patch convolution, a class token, a fixed 2D sine-cosine or a learned position table
  (the class token's position its first row, as models_mae's `pos_embed`), or none and
  BEiT's shared `RelativePositionBias` added to every block's scaled logits (SimMIM's
  `USE_APE False`, `USE_SHARED_RPB True`); pre-norm blocks (LayerNorm eps 1e-6, fused qkv
  with bias, or BEiT's `q_bias`/`v_bias` with the key's fixed at 0; softmax attention scaled
  by `head_dim ** -0.5`, exact-erf GELU MLP; LayerScale `gamma_1`/`gamma_2` and timm's
  `DropPath` at `linspace(0, rate, depth)`), final norm, "cls" or "mean" pooling.
  `pixel_norm="imagenet"` standardises the [0, 1] input first: both codes' images
  come standardised by their loader's `transforms.Normalize`. `embed_patches(x, mask,
  mask_token)` puts the mask token in the masked places before the positions.
- `MAE`: models_mae.py's `MaskedAutoencoderViT` on top of a `ViT`: `random_masking`
  by argsort of uniform noise (or a given `noise`), the encoder on the visible
  patches, the decoder (embed, mask token, fixed sine-cosine positions, blocks,
  norm, pred, class token dropped), `forward_loss` with `norm_pix_loss`.
  `initialize_weights` is models_mae's: xavier-uniform Linear and flattened patch
  kernels, zero biases (the patch bias keeps PyTorch's default), N(0, 0.02^2) tokens.
- `SimMIM`: models/simmim.py's `SimMIM` on `VisionTransformerForSimMIM`'s forward, a given
  `(B, grid, grid)` mask; `MaskGenerator`: data_simmim.py's. The `"beit"` init is
  VisionTransformerForSimMIM's: every draw N(0, 0.02^2) cut at one std, `fix_init_weight`,
  zero table and q/v biases, LayerScale 0.1; the decoder keeps PyTorch's default.

Stochastic depth follows timm's `DropPath` in `train()` mode; the parity tests compare at
rate 0 or in `eval()`, where both sides are deterministic.

keras_ssl's SimMIM against microsoft/SimMIM, as this reference found them on 2026-12-07:

1. The loss target, by default only: the official L1 reads the loader's normalised images;
   keras_ssl's default `imagenet_targets=False` the [0, 1] pixels (`imagenet_targets=True`
   is the official, to 1e-5). The same objective up to an affine decoder re-parametrisation
   and channel weights 1 / std = (4.37, 4.46, 4.44). [`SimMIM(target_pixels="raw")`]
2. No effect on outputs: keras_ssl's fused qkv carries a key bias that BEiT's attention has
   not (`from_keras` drops it: the softmax ignores a per-query constant).
3. Layout only: keras_ssl's decoder Dense orders its outputs (i, j, channel), PixelShuffle's
   conv (channel, i, j); the official hard-codes `encoder_stride` 16 and 3 channels (ViT-B/16's).

keras_ssl's MAE against models_mae.py, as this reference found them on 2026-12-07 (the options
that make it compute keras_ssl's old choices in brackets; keras_ssl has since taken the official
target, visible count and decoder width, 1 to 3):

1. The loss target. models_mae patchifies the images the encoder sees, which
   main_pretrain.py standardised with ImageNet's statistics; keras_ssl patchifies
   the [0, 1] view and standardises only inside the encoder (`pixel_norm`). With
   `norm_pix_loss` the two targets still differ, because the standardisation is per
   channel and a patch's statistics mix the channels. [`target_pixels="raw"`]
2. Visible patches: models_mae keeps `int(N * (1 - mask_ratio))` (floor, in floating
   point), keras_ssl `round((1 - mask_ratio) * N)`: equal for 64 or 16 patches at 0.75,
   not in general (16 patches at 0.7: 4 against 5; 10 at 0.9: 0 against 1).
   [`keep="round"`]
3. The decoder's MLP width: models_mae's decoder blocks take the encoder's `mlp_ratio`,
   keras_ssl's `MAEDecoder` always 4 (the same for every models_mae architecture).
4. Defaults only: models_mae's `norm_pix_loss` is False unless asked for (the paper's
   runs ask for it), keras_ssl's True; models_mae's class default LayerNorm eps is
   1e-5, but its architectures (`mae_vit_*`) all pass 1e-6, keras_ssl's value.

Weight layout: keras_ssl names its layers by a global counter (`block_0/dense_7/kernel`),
so a variable's `path` differs between two builds of the same model. The arrays are
keyed by stable names instead, which `keras_variables` resolves on any build:

    enc/patch_embed/{kernel,bias}            Conv2D (p, p, C, D)  <- Conv2d (D, C, p, p)
    enc/pos_embed/class_token                (1, 1, D)            <- cls_token
    enc/pos_embed/class_position             (1, 1, D)            <- pos_embed[:, :1]
    enc/pos_embed/positions                  (1, h, w, D)         <- pos_embed[:, 1:] (raster order)
    enc/block_{i}/{norm1,norm2}/{gamma,beta} LayerNorm            <- weight, bias
    enc/block_{i}/{qkv,proj,fc1,fc2}/kernel  Dense (in, out)      <- Linear weight (out, in), transposed
    enc/block_{i}/{qkv,proj,fc1,fc2}/bias    (out,)               <- Linear bias
    enc/norm/{gamma,beta}
    dec/{embed,head}/{kernel,bias}           MAEDecoder.embed, .head <- decoder_embed, decoder_pred
    dec/mask_token, dec/positions            (1, 1, d), (1, 1 + N, d) <- mask_token, decoder_pos_embed
    dec/block_{i}/..., dec/norm/...          as the encoder's     <- decoder_blocks, decoder_norm
    enc/rel_pos_bias/table                   ((2g - 1)^2 + 3, heads) <- relative_position_bias_table
    enc/block_{i}/{gamma1,gamma2}            (D,)                 <- gamma_1, gamma_2
    enc/block_{i}/qkv/bias (BEiT's)          (3 D,)               <- [q_bias, 0, v_bias]
    enc/mask_token                           SimMIM.mask_token (1, 1, D) <- encoder.mask_token
    dec/head/{kernel,bias}                   SimMIM.decoder Dense (D, p p C) <- decoder[0] Conv2d (p p C, D, 1, 1),
                                             units (i, j, c) <- channels (c, i, j)

`from_keras(module, model)` copies a keras_ssl `ViT` (or `MAE`, `SimMIM`: encoder, decoder,
mask token) into the reference; `keras_arrays(module)` gives `{key: array}` back, which
`assign_keras(model, arrays)` puts into a keras_ssl model, so the reference can hand
its own initialisation to keras_ssl.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's Normalize


def sincos_table(dim, grid_size, cls_token=False):
    """util/pos_embed.py `get_2d_sincos_pos_embed`: `(N [+ 1], dim)` float32, raster order.

    The first half encodes the column (the meshgrid puts w first), the second the row;
    each half `[sin(x w_k), cos(x w_k)]`, `w_k = 10000 ** (-k / (dim / 4))`.
    """
    if dim % 4:
        raise ValueError(f"sine-cosine positions need dim divisible by 4, got {dim}")
    omega = 1.0 / 10000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
    cols, rows = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64))

    def one_axis(pos):
        angles = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    table = np.concatenate([one_axis(cols), one_axis(rows)], axis=1)
    if cls_token:
        table = np.concatenate([np.zeros((1, dim)), table])
    return table.astype(np.float32)


class DropPath(nn.Module):
    """timm's `DropPath`: in training, each sample's branch zeroed with probability `rate`, kept ones scaled."""

    def __init__(self, rate=0.0):
        super().__init__()
        self.rate = float(rate)

    def forward(self, x):
        if not (self.training and self.rate):
            return x
        keep = 1.0 - self.rate
        return x * x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep) / keep


class Block(nn.Module):
    """Pre-norm Transformer block: timm 0.3.2's as models_mae builds it, or BEiT's as SimMIM's ViT does.

    `qkv_bias`: `"qkv"` (timm: one fused bias) or `"qv"` (BEiT's `Attention`: `q_bias` and
    `v_bias`, the key's bias fixed at zero). `layerscale`: BEiT's `init_values` (`gamma_1`,
    `gamma_2` scale the branches before the drop path); `drop_path`: timm's `DropPath` rate.
    """

    def __init__(self, dim, heads, mlp_ratio=4.0, eps=1e-6, layerscale=None, drop_path=0.0, qkv_bias="qkv"):
        super().__init__()
        if qkv_bias not in ("qkv", "qv"):
            raise ValueError(f"qkv_bias 'qkv' or 'qv', got {qkv_bias!r}")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=qkv_bias == "qkv"), nn.Linear(dim, dim)
        if qkv_bias == "qv":
            self.q_bias, self.v_bias = nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))
        hidden = int(dim * mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.layerscale = layerscale
        if layerscale is not None:
            self.gamma_1 = nn.Parameter(layerscale * torch.ones(dim))
            self.gamma_2 = nn.Parameter(layerscale * torch.ones(dim))
        self.drop_path = DropPath(drop_path)

    def attention(self, x, rel_pos_bias=None):
        b, n, c = x.shape
        bias = self.qkv.bias
        if bias is None:  # BEiT: torch.cat((q_bias, zeros_like(v_bias), v_bias))
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        # (B, N, 3, heads, head_dim): timm's split, which keras_ssl's fused qkv kernel shares.
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        if rel_pos_bias is not None:
            attn = attn + rel_pos_bias  # (heads, N, N), after the scaling
        return self.proj((attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c))

    def forward(self, x, rel_pos_bias=None):
        a = self.attention(self.norm1(x), rel_pos_bias)
        x = x + self.drop_path(a if self.layerscale is None else self.gamma_1 * a)
        m = self.fc2(F.gelu(self.fc1(self.norm2(x))))  # nn.GELU: the exact (erf) form
        return x + self.drop_path(m if self.layerscale is None else self.gamma_2 * m)


class RelativePositionBias(nn.Module):
    """BEiT's shared `RelativePositionBias` (SimMIM's vision_transformer.py): `() -> (heads, 1 + N, 1 + N)`.

    A table of `(2 g - 1)^2` patch offsets then 3 class entries (class to patch, patch
    to class, class to class), zeros at init; the index as the official's meshgrid builds it.
    """

    def __init__(self, grid_size, heads):
        super().__init__()
        g = grid_size
        distances = (2 * g - 1) ** 2 + 3
        self.relative_position_bias_table = nn.Parameter(torch.zeros(distances, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (g - 1)  # (N, N, 2), from 0
        index = torch.zeros((g * g + 1,) * 2, dtype=torch.long)
        index[1:, 1:] = rel[..., 0] * (2 * g - 1) + rel[..., 1]
        index[0, :], index[:, 0], index[0, 0] = distances - 3, distances - 2, distances - 1
        self.register_buffer("relative_position_index", index)

    def forward(self):
        n = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1).contiguous()


def _pixel_stats(pixel_norm, channels):
    if pixel_norm is None:
        return None
    if isinstance(pixel_norm, str):
        if pixel_norm != "imagenet":
            raise ValueError(f"pixel_norm: None, 'imagenet' or (mean, std); got {pixel_norm!r}")
        # keras_ssl's grey images: the channels' averages.
        stats = (IMAGENET_MEAN, IMAGENET_STD) if channels != 1 else ([np.mean(IMAGENET_MEAN)], [np.mean(IMAGENET_STD)])
    else:
        stats = pixel_norm
    return [torch.tensor(np.asarray(v, np.float32).reshape(1, channels, 1, 1)) for v in stats]


class ViT(nn.Module):
    """Vision Transformer on NCHW images in [0, 1] -> `(B, dim)` features, keras_ssl's `ViT` options.

    `positions="relative"`: no position table, one BEiT `RelativePositionBias` shared by the
    blocks (SimMIM's `USE_APE False`, `USE_SHARED_RPB True`); `layerscale`, `drop_path`
    (`linspace(0, rate, depth)`, or `rate` in every block with `drop_path_uniform`),
    `qkv_bias` as `Block`'s; `initializer`: `"mae"` (models_mae's) or `"beit"` (SimMIM's).
    """

    def __init__(
        self,
        image_size=32,
        patch_size=4,
        channels=3,
        dim=192,
        depth=12,
        heads=3,
        mlp_ratio=4.0,
        positions="learned",
        pixel_norm=None,
        pool="cls",
        layerscale=None,
        drop_path=0.0,
        drop_path_uniform=False,
        qkv_bias="qkv",
        initializer="mae",
    ):
        super().__init__()
        if positions not in ("learned", "sincos", "relative") or pool not in ("cls", "mean"):
            raise ValueError(
                f"positions 'learned', 'sincos' or 'relative', pool 'cls' or 'mean'; got {positions!r}, {pool!r}"
            )
        if initializer not in ("mae", "beit"):
            raise ValueError(f"initializer 'mae' or 'beit', got {initializer!r}")
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        self.dim, self.depth, self.heads, self.mlp_ratio = dim, depth, heads, mlp_ratio
        self.positions, self.pool, self.initializer = positions, pool, initializer
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        stats = _pixel_stats(pixel_norm, channels)
        self.register_buffer("pixel_mean", None if stats is None else stats[0])
        self.register_buffer("pixel_std", None if stats is None else stats[1])
        self.patch_embed = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = self.rel_pos_bias = None
        if positions == "relative":
            self.rel_pos_bias = RelativePositionBias(self.grid_size, heads)
        else:
            # models_mae's frozen table; "learned" trains every row (keras_ssl's class position too).
            trainable = positions == "learned"
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, dim), requires_grad=trainable)
        rates = [float(drop_path)] * depth if drop_path_uniform else torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, 1e-6, layerscale, rate, qkv_bias) for rate in rates])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.initialize_weights()

    @classmethod
    def like(cls, keras_vit, qkv_bias="qkv"):
        """A reference with a keras_ssl `ViT`'s sizes and options (its own weights: `from_keras` copies).

        `qkv_bias`: keras_ssl has one fused bias; `"qv"` builds BEiT's (SimMIM's) attention,
        which drops keras_ssl's key bias (a constant per query's logits: the softmax ignores it).
        The init is BEiT's for keras_ssl's `"beit"` preset, else models_mae's.
        """
        unsupported = {"num_registers": 0, "class_token": True, "dropout": 0.0}
        for name, value in unsupported.items():
            if getattr(keras_vit, name) != value:
                raise ValueError(f"the reference ViT has no {name}={getattr(keras_vit, name)!r}")
        config = keras_vit.get_config()
        return cls(
            **{k: config[k] for k in ("image_size", "patch_size", "channels", "dim", "depth", "heads")},
            **{k: config[k] for k in ("mlp_ratio", "positions", "pixel_norm", "pool", "layerscale", "drop_path")},
            drop_path_uniform=config["drop_path_uniform"],
            qkv_bias=qkv_bias,
            initializer="beit" if config["initializer"] == "beit" else "mae",
        )

    @torch.no_grad()
    def initialize_weights(self):
        """models_mae's `initialize_weights` (keras_ssl's `initializer="mae"`; learned positions N(0, 0.02^2)),
        or SimMIM's `VisionTransformer.__init__` (`"beit"`). LayerScale and the relative table keep their
        constructor values (`init_values`, zeros), as in BEiT."""
        if self.initializer == "beit":
            self._init_beit()
            return
        if self.positions == "sincos":
            self.pos_embed.copy_(torch.from_numpy(sincos_table(self.dim, self.grid_size, cls_token=True))[None])
        elif self.positions == "learned":
            nn.init.normal_(self.pos_embed, std=0.02)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a Linear: fan-out dim, not dim * p * p
        nn.init.normal_(self.cls_token, std=0.02)  # timm's trunc_normal_(std=.02) cuts at +-2: a normal
        self.apply(_init_linear_and_norm)

    def _init_beit(self):
        # VisionTransformerForSimMIM overrides `_trunc_normal_` to cut at one std (a=-std, b=std),
        # and the base class's __init__ calls the override: every draw below is cut there.
        if self.pos_embed is not None:
            cut_normal_(self.pos_embed)
        cut_normal_(self.cls_token)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                cut_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for layer_id, block in enumerate(self.blocks, start=1):  # fix_init_weight
            block.proj.weight.div_(math.sqrt(2.0 * layer_id))
            block.fc2.weight.div_(math.sqrt(2.0 * layer_id))

    def standardize(self, images):
        return images if self.pixel_mean is None else (images - self.pixel_mean) / self.pixel_std

    def embed_patches(self, images, mask=None, mask_token=None):
        """NCHW images in [0, 1] -> patch tokens with positions `(B, N, dim)`.

        `mask` `(B, grid, grid)` or `(B, N)`, 1 = masked: the patch embedding there becomes
        `mask_token` `(1, 1, dim)` before the positions, `x * (1 - w) + mask_token * w` as
        VisionTransformerForSimMIM.forward.
        """
        grid = self.patch_embed(self.standardize(images))
        if grid.shape[-2:] != (self.grid_size, self.grid_size):
            raise ValueError(f"the reference ViT takes {self.image_size}-pixel images only, got {tuple(images.shape)}")
        x = grid.flatten(2).transpose(1, 2)
        if mask is not None:
            w = mask.flatten(1).unsqueeze(-1).type_as(x)
            x = x * (1 - w) + mask_token.expand(x.shape[0], x.shape[1], -1) * w
        return x if self.pos_embed is None else x + self.pos_embed[:, 1:]

    def encode_tokens(self, tokens):
        """`(B, n, dim)` -> class token (plus its position) prepended, blocks, norm: `(B, 1 + n, dim)`."""
        cls = self.cls_token if self.pos_embed is None else self.cls_token + self.pos_embed[:, :1]
        x = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        rel_pos_bias = None
        if self.rel_pos_bias is not None:
            if tokens.shape[1] != self.num_patches:
                raise ValueError(f"relative positions need all {self.num_patches} patches, got {tokens.shape[1]}")
            rel_pos_bias = self.rel_pos_bias()  # one bias, computed once, for every block
        for block in self.blocks:
            x = block(x, rel_pos_bias)
        return self.norm(x)

    def forward(self, images):
        x = self.encode_tokens(self.embed_patches(images))
        return x[:, 0] if self.pool == "cls" else x[:, 1:].mean(dim=1)


def cut_normal_(tensor, std=0.02):
    """BEiT's `trunc_normal_(std=std, a=-std, b=std)`: N(0, std^2) cut at one std, not rescaled."""
    return nn.init.trunc_normal_(tensor, std=std, a=-std, b=std)


def _init_linear_and_norm(m):
    # models_mae's `_init_weights` ("xavier_uniform following official JAX ViT").
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def patchify(images, patch_size):
    """models_mae's `patchify`: NCHW -> `(B, N, p * p * C)`, each patch row by row, channels last."""
    b, c, height, width = images.shape
    p = patch_size
    x = images.reshape(b, c, height // p, p, width // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (height // p) * (width // p), p * p * c)


class MAE(nn.Module):
    """models_mae.py's `MaskedAutoencoderViT` on a reference `ViT`, with keras_ssl MAE's arguments.

    `target_pixels`: `"standardized"` (models_mae: the loss reads the encoder's
    standardised input) or `"raw"` (keras_ssl: the [0, 1] pixels); `keep`: `"floor"`
    (models_mae's visible count) or `"round"` (keras_ssl's). See the module docstring.
    """

    def __init__(
        self,
        encoder,
        mask_ratio=0.75,
        decoder_dim=128,
        decoder_depth=2,
        decoder_heads=4,
        norm_pix_loss=True,
        target_pixels="standardized",
        keep="floor",
    ):
        super().__init__()
        if target_pixels not in ("standardized", "raw") or keep not in ("floor", "round"):
            raise ValueError(
                f"target_pixels 'standardized' or 'raw', keep 'floor' or 'round'; got {target_pixels!r}, {keep!r}"
            )
        self.encoder, self.mask_ratio, self.norm_pix_loss = encoder, float(mask_ratio), bool(norm_pix_loss)
        self.target_pixels, self.keep = target_pixels, keep
        self.decoder_dim, self.decoder_depth = decoder_dim, decoder_depth
        n = encoder.num_patches
        self.decoder_embed = nn.Linear(encoder.dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + n, decoder_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_dim, decoder_heads, encoder.mlp_ratio) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, encoder.patch_size**2 * encoder.channels)
        self.initialize_weights()

    @classmethod
    def like(cls, keras_mae, **kwargs):
        """A reference with a keras_ssl `MAE`'s sizes (`kwargs`: `target_pixels`, `keep`)."""
        sizes = dict(
            mask_ratio=keras_mae.mask_ratio,
            decoder_dim=keras_mae.decoder_dim,
            decoder_depth=keras_mae.decoder_depth,
            decoder_heads=keras_mae.decoder_heads,
            norm_pix_loss=keras_mae.norm_pix_loss,
        )
        return cls(ViT.like(keras_mae.encoder), **{**sizes, **kwargs})

    @torch.no_grad()
    def initialize_weights(self):
        """models_mae's: the encoder's (`ViT.initialize_weights`), then the decoder's."""
        self.encoder.initialize_weights()
        table = sincos_table(self.decoder_dim, self.encoder.grid_size, cls_token=True)
        self.decoder_pos_embed.copy_(torch.from_numpy(table)[None])
        nn.init.normal_(self.mask_token, std=0.02)
        for module in (self.decoder_embed, *self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            module.apply(_init_linear_and_norm)

    def num_visible(self, n):
        return int(n * (1 - self.mask_ratio)) if self.keep == "floor" else int(round((1 - self.mask_ratio) * n))

    def random_masking(self, x, noise=None):
        """Per-sample shuffle by argsort of `noise` (default U(0, 1)): the smallest are kept.

        Returns `(visible (B, n, D), mask (B, N) with 1 = removed, ids_restore (B, N))`.
        """
        b, n, d = x.shape
        keep = self.num_visible(n)
        noise = torch.rand(b, n, device=x.device) if noise is None else noise.to(x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        visible = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
        mask = torch.ones(b, n, device=x.device)
        mask[:, :keep] = 0
        return visible, torch.gather(mask, 1, ids_restore), ids_restore

    def forward_encoder(self, images, noise=None):
        visible, mask, ids_restore = self.random_masking(self.encoder.embed_patches(images), noise)
        return self.encoder.encode_tokens(visible), mask, ids_restore

    def forward_decoder(self, latent, ids_restore):
        x = self.decoder_embed(latent)
        b, n = ids_restore.shape
        masked = self.mask_token.expand(b, n + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], masked], dim=1)
        patches = torch.gather(patches, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))  # unshuffle
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]  # the class token's output dropped

    def forward_loss(self, images, pred, mask):
        """Mean over pixels of the squared error, then over the removed patches."""
        if self.target_pixels == "standardized":
            images = self.encoder.standardize(images)
        target = patchify(images, self.encoder.patch_size)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)  # unbiased var
            target = (target - mean) / (var + 1e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def forward(self, images, noise=None):
        """NCHW images in [0, 1] -> `(loss, pred (B, N, p * p * C), mask (B, N))`."""
        latent, mask, ids_restore = self.forward_encoder(images, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(images, pred, mask), pred, mask


class SimMIM(nn.Module):
    """models/simmim.py's `SimMIM` with `VisionTransformerForSimMIM`'s forward, on a reference `ViT`.

    The mask token replaces the masked patch embeddings (before positions, if any), the
    ViT encodes every token, the class token's output is dropped, and the decoder (a 1x1
    conv to `p * p * C` channels, then `PixelShuffle(p)`) predicts the pixels; the loss is
    the L1 error on the masked pixels, `sum(|x - x_rec| * m) / (sum(m) + 1e-5) / C`.
    The official hard-codes the shuffle to 16 (`encoder_stride`) and 3 channels, which is
    ViT-B/16's `p` and `C`: here they are the encoder's.

    `target_pixels`: `"standardized"` (official: `x` is the loader's normalised image, the
    encoder's input) or `"raw"` (the [0, 1] pixels, keras_ssl's default `imagenet_targets=False`).
    """

    def __init__(self, encoder, target_pixels="standardized"):
        super().__init__()
        if target_pixels not in ("standardized", "raw"):
            raise ValueError(f"target_pixels 'standardized' or 'raw', got {target_pixels!r}")
        self.encoder, self.target_pixels = encoder, target_pixels
        p, c = encoder.patch_size, encoder.channels
        self.mask_token = nn.Parameter(torch.zeros(1, 1, encoder.dim))
        # Built after the encoder's init, so it keeps PyTorch's default Conv2d init (as the official).
        self.decoder = nn.Sequential(nn.Conv2d(encoder.dim, p * p * c, kernel_size=1), nn.PixelShuffle(p))
        with torch.no_grad():
            cut_normal_(self.mask_token)

    @classmethod
    def like(cls, keras_simmim, **kwargs):
        """A reference of a keras_ssl `SimMIM`'s sizes, BEiT's q/v attention bias (`kwargs`: `target_pixels`)."""
        return cls(ViT.like(keras_simmim.encoder, qkv_bias="qv"), **kwargs)

    def forward_encoder(self, images, mask):
        """-> the patch tokens as a `(B, dim, grid, grid)` map (the class token's dropped)."""
        tokens = self.encoder.embed_patches(images, mask, self.mask_token)
        z = self.encoder.encode_tokens(tokens)[:, 1:]
        g = self.encoder.grid_size
        return z.permute(0, 2, 1).reshape(z.shape[0], -1, g, g)

    def forward_loss(self, images, x_rec, mask):
        x = self.encoder.standardize(images) if self.target_pixels == "standardized" else images
        p = self.encoder.patch_size
        m = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).type_as(x_rec)
        loss_recon = F.l1_loss(x, x_rec, reduction="none")
        return (loss_recon * m).sum() / (m.sum() + 1e-5) / self.encoder.channels

    def forward(self, images, mask):
        """NCHW images in [0, 1], `mask` `(B, grid, grid)` (1 = masked) -> `(loss, x_rec (B, C, H, W))`."""
        x_rec = self.decoder(self.forward_encoder(images, mask))
        return self.forward_loss(images, x_rec, mask), x_rec


class MaskGenerator:
    """data/data_simmim.py's `MaskGenerator`, drawing from `rng` (a `np.random.Generator`).

    `ceil(mask_ratio * count)` of the `count = (input_size / mask_patch_size)^2` squares, a
    uniform random subset (a permutation's first), each repeated to the model patches it covers:
    `() -> (grid, grid)` int, 1 = masked.
    """

    def __init__(self, input_size=192, mask_patch_size=32, model_patch_size=4, mask_ratio=0.6, rng=None):
        assert input_size % mask_patch_size == 0 and mask_patch_size % model_patch_size == 0
        self.rand_size = input_size // mask_patch_size
        self.scale = mask_patch_size // model_patch_size
        self.token_count = self.rand_size**2
        self.mask_count = int(np.ceil(self.token_count * mask_ratio))
        self.rng = np.random.default_rng() if rng is None else rng

    def __call__(self):
        mask = np.zeros(self.token_count, dtype=int)
        mask[self.rng.permutation(self.token_count)[: self.mask_count]] = 1
        mask = mask.reshape(self.rand_size, self.rand_size)
        return mask.repeat(self.scale, axis=0).repeat(self.scale, axis=1)


# ------------------------------------------------------------------ keras_ssl's layout

_DENSE = ("qkv", "proj", "fc1", "fc2")


def _block_entries(prefix, block):
    for name in ("norm1", "norm2"):
        norm = getattr(block, name)
        yield f"{prefix}/{name}/gamma", norm.weight, None
        yield f"{prefix}/{name}/beta", norm.bias, None
    for name in _DENSE:
        linear = getattr(block, name)
        yield f"{prefix}/{name}/kernel", linear.weight, "dense"
        if linear.bias is None:  # BEiT's q/v bias: keras_ssl's fused bias, its key third zero
            yield f"{prefix}/{name}/bias", (block.q_bias, block.v_bias), "qv"
        else:
            yield f"{prefix}/{name}/bias", linear.bias, None
    if block.layerscale is not None:
        yield f"{prefix}/gamma1", block.gamma_1, None
        yield f"{prefix}/gamma2", block.gamma_2, None


def _entries(module):
    """`(key, tensor (a view of a parameter), kind)`: kind "dense", "conv", "qv" (a pair of tensors),
    ("shuffle", p, C) (the decoder's channel order), or a Keras shape to reshape to."""
    vit = module.encoder if isinstance(module, (MAE, SimMIM)) else module
    d, g = vit.dim, vit.grid_size
    yield "enc/patch_embed/kernel", vit.patch_embed.weight, "conv"
    yield "enc/patch_embed/bias", vit.patch_embed.bias, None
    yield "enc/pos_embed/class_token", vit.cls_token, None
    if vit.pos_embed is not None:
        yield "enc/pos_embed/class_position", vit.pos_embed[:, :1], None
        yield "enc/pos_embed/positions", vit.pos_embed[:, 1:], (1, g, g, d)
    if vit.rel_pos_bias is not None:
        yield "enc/rel_pos_bias/table", vit.rel_pos_bias.relative_position_bias_table, None
    for i, block in enumerate(vit.blocks):
        yield from _block_entries(f"enc/block_{i}", block)
    yield "enc/norm/gamma", vit.norm.weight, None
    yield "enc/norm/beta", vit.norm.bias, None
    if isinstance(module, SimMIM):
        yield "enc/mask_token", module.mask_token, None  # the official encoder's
        shuffle = ("shuffle", vit.patch_size, vit.channels)
        yield "dec/head/kernel", module.decoder[0].weight, shuffle
        yield "dec/head/bias", module.decoder[0].bias, shuffle
    if isinstance(module, MAE):
        yield "dec/embed/kernel", module.decoder_embed.weight, "dense"
        yield "dec/embed/bias", module.decoder_embed.bias, None
        yield "dec/mask_token", module.mask_token, None
        yield "dec/positions", module.decoder_pos_embed, None
        for i, block in enumerate(module.decoder_blocks):
            yield from _block_entries(f"dec/block_{i}", block)
        yield "dec/norm/gamma", module.decoder_norm.weight, None
        yield "dec/norm/beta", module.decoder_norm.bias, None
        yield "dec/head/kernel", module.decoder_pred.weight, "dense"
        yield "dec/head/bias", module.decoder_pred.bias, None


def keras_variables(model):
    """`{key: keras Variable}` of a keras_ssl `ViT`, or of an `MAE` or `SimMIM` (encoder, decoder, mask token)."""
    vit = getattr(model, "encoder", model)
    out = {
        "enc/patch_embed/kernel": vit.patch_embed.projection.kernel,
        "enc/patch_embed/bias": vit.patch_embed.projection.bias,
        "enc/pos_embed/class_token": vit.pos_embed.class_token,
    }
    if vit.positions == "relative":
        out["enc/rel_pos_bias/table"] = vit.rel_pos_bias.table
    else:
        for name in ("class_position", "positions"):
            out[f"enc/pos_embed/{name}"] = getattr(vit.pos_embed, name)

    def add_block(prefix, block):
        for name in ("norm1", "norm2"):
            out[f"{prefix}/{name}/gamma"], out[f"{prefix}/{name}/beta"] = getattr(block, name).weights
        for name in _DENSE:
            out[f"{prefix}/{name}/kernel"], out[f"{prefix}/{name}/bias"] = getattr(block, name).weights
        if getattr(block, "layerscale", None) is not None:
            out[f"{prefix}/gamma1"], out[f"{prefix}/gamma2"] = block.gamma1, block.gamma2

    for i, block in enumerate(vit.blocks):
        add_block(f"enc/block_{i}", block)
    out["enc/norm/gamma"], out["enc/norm/beta"] = vit.norm.weights
    decoder = getattr(model, "decoder", None)
    if decoder is not None and not hasattr(decoder, "embed"):  # SimMIM: one Dense, the mask token the model's
        out["enc/mask_token"] = model.mask_token
        out["dec/head/kernel"], out["dec/head/bias"] = decoder.kernel, decoder.bias
    elif decoder is not None:
        out["dec/embed/kernel"], out["dec/embed/bias"] = decoder.embed.weights
        out["dec/mask_token"], out["dec/positions"] = decoder.mask_token, decoder.positions
        for i, block in enumerate(decoder.blocks):
            add_block(f"dec/block_{i}", block)
        out["dec/norm/gamma"], out["dec/norm/beta"] = decoder.norm.weights
        out["dec/head/kernel"], out["dec/head/bias"] = decoder.head.weights
    return out


def _to_keras(tensor, kind):
    if kind == "qv":
        q, v = (t.detach().cpu().numpy() for t in tensor)
        return np.concatenate([q, np.zeros_like(q), v])  # BEiT's key bias: zero
    a = tensor.detach().cpu().numpy()
    if kind == "dense":
        return a.T.copy()  # Linear (out, in) -> Dense (in, out)
    if kind == "conv":
        return a.transpose(2, 3, 1, 0).copy()  # Conv2d (D, C, p, p) -> Conv2D (p, p, C, D)
    if kind is not None and kind[0] == "shuffle":
        # PixelShuffle reads output channel c * p * p + i * p + j as pixel (i, j) of channel c;
        # keras_ssl's unpatchify reads unit (i * p + j) * C + c.
        _, p, c = kind
        rows = a.reshape(c, p, p, -1).transpose(1, 2, 0, 3).reshape(p * p * c, -1)
        return rows.T.copy() if a.ndim > 1 else rows.reshape(-1).copy()  # Conv2d (out, D, 1, 1) -> Dense (D, out)
    return a.reshape(kind) if kind is not None else a.copy()


def _to_torch(array, kind, shape):
    a = np.asarray(array, np.float32)
    if kind == "dense":
        a = a.T
    elif kind == "conv":
        a = a.transpose(3, 2, 0, 1)
    elif kind is not None and kind[0] == "shuffle":  # the inverse of `_to_keras`'s
        _, p, c = kind
        rows = a.T if a.ndim > 1 else a[:, None]
        a = rows.reshape(p, p, c, -1).transpose(2, 0, 1, 3).reshape(shape)
    if a.shape != tuple(shape) and a.size == np.prod(shape) and kind not in ("dense", "conv"):
        a = a.reshape(shape)  # the position grid (1, h, w, D) -> (1, h * w, D)
    if a.shape != tuple(shape):
        raise ValueError(f"shape {array.shape} does not fit the reference's {tuple(shape)}")
    return torch.from_numpy(np.ascontiguousarray(a))


@torch.no_grad()
def from_keras(module, model, layout=None):
    """Copies a keras_ssl `ViT`, `MAE` or `SimMIM` into the reference of the same kind.

    `layout`: `(entries, keras_variables)` functions of another model's layout (torch_vit_ijepa's).
    Into BEiT's q/v bias, keras_ssl's key bias is dropped: it shifts each query's logits
    by one constant, which the softmax ignores, so the outputs are unchanged.
    """
    import keras

    entries_of, variables_of = layout or (_entries, keras_variables)
    variables = variables_of(model)
    entries = list(entries_of(module))
    missing = {key for key, _, _ in entries} ^ set(variables)
    if missing:
        raise ValueError(f"the two models' layouts differ: {sorted(missing)[:5]}")
    for key, tensor, kind in entries:
        array = keras.ops.convert_to_numpy(variables[key])
        if kind == "qv":
            q, v = tensor
            d = q.shape[0]
            if array.shape != (3 * d,):
                raise ValueError(f"{key}: shape {array.shape} does not fit the reference's 3 x {d}")
            q.copy_(torch.from_numpy(array[:d].copy()))
            v.copy_(torch.from_numpy(array[2 * d :].copy()))
        else:
            tensor.copy_(_to_torch(array, kind, tensor.shape))


def keras_arrays(module, layout=None):
    """The reference's weights as `{key: float32 array}` in keras_ssl's shapes (`assign_keras` loads them)."""
    return {key: _to_keras(tensor, kind) for key, tensor, kind in (layout or (_entries,))[0](module)}


def assign_keras(model, arrays, layout=None):
    """Assigns `keras_arrays` output into a keras_ssl `ViT`, `MAE` or `SimMIM` (`layout`: as `from_keras`);
    every variable of the layout must be given."""
    variables = (layout or (None, keras_variables))[1](model)
    if set(arrays) != set(variables):
        raise ValueError(f"keys differ from the model's layout: {sorted(set(arrays) ^ set(variables))[:5]}")
    for key, array in arrays.items():
        if tuple(variables[key].shape) != array.shape:
            raise ValueError(f"{key}: keras {tuple(variables[key].shape)} vs reference {array.shape}")
        variables[key].assign(array)


# ------------------------------------------------------------------ MSN


class MSN(nn.Module):
    """facebookresearch/msn's training step (`src/msn_train.py`, `src/losses.py`, `src/deit.py`) on two `ViT`s.

    Written from the official code (configs/pretrain/msn_vits16.yaml for the values), with
    keras_ssl's `MSN` constructor names:

    - the anchor `encoder` on the anchor views `views[1:]`, grouped as deit's `forward` groups
      consecutive same-size crops: the first group (the random anchor crop) has its patch tokens
      dropped after the positions (class token kept), `floor(N * (1 - patch_drop))` kept; the later
      (focal) groups are not masked. Each group goes through the head in one call (its own BN
      batch). Crops of another size get deit's `interpolate_pos_encoding` (bicubic, `scale_factor`).
    - the `target_encoder` (EMA copy) on `views[0]`, unmasked, through its own head, no gradient.
    - the head: `init_model`'s `fc1, bn1, gelu1, fc2, bn2, gelu2, fc3` (`use_bn: true`), on the
      class token; no prediction head (`use_pred_head: false`).
    - `loss`: `init_msn_loss`'s: `snn` = softmax(cos(z, prototypes) / temperature) @ proto_labels
      (smoothed one-hot), targets sharpened `p ** (1 / T)`, then `distributed_sinkhorn` (3 rounds),
      repeated once per anchor view; cross-entropy averaged over all `B * views` anchor rows;
      ME-MAX `log K - H(mean of every anchor row's probabilities)`, weight `me_max_weight`.

    `forward(views, keep=None)`: `keep` the kept patch indices (0-based, class token excluded), `(n,)`
    one subset for the batch as the official's one `randperm`, or `(B, n)` one per image as keras_ssl's;
    None draws the official's. Returns a dict: loss, cross_entropy, me_max, anchors, target, keep.

    keras_ssl's MSN against facebookresearch/msn, as this reference found them:

    1. The dropped patches: the official draws one `randperm` for the whole batch (every image keeps
       the same patch positions); keras_ssl draws a subset per image (documented there). Same count
       (`floor`: 16 patches at 0.15 keep 13). Given the same subsets the losses agree (to 1e-5; 0.0 in
       tests/test_parity_msn.py's batch of 8, where keras_ssl drew 8 distinct subsets; image 0's subset
       for all 8, the official's kind of draw, moves that loss from 6.898 by -0.20).
    2. No other difference in the loss: head (BN eps 1e-5, exact GELU), cosine / 0.1 softmax, label
       smoothing, sharpening 0.25, Sinkhorn (3 rounds, on the sharpened targets), CE and ME-MAX
       averaged over every anchor row, focal views' one head batch, target = first crop.
    3. Schedules (not in one step's loss): the official EMA momentum rises linearly 0.996 -> 1 over
       1.25 x the run, keras_ssl's by a cosine to `momentum_end` over the run (documented there).
    """

    def __init__(
        self,
        encoder,
        num_prototypes=1024,
        hidden_dim=2048,
        output_dim=256,
        temperature=0.1,
        sharpen_temperature=0.25,
        me_max_weight=1.0,
        sinkhorn_iterations=3,
        label_smoothing=0.0,
        patch_drop=0.15,
    ):
        super().__init__()
        import copy
        from collections import OrderedDict

        self.encoder = encoder
        d = encoder.dim
        layers = OrderedDict()
        layers["fc1"] = nn.Linear(d, hidden_dim)
        layers["bn1"] = nn.BatchNorm1d(hidden_dim)
        layers["gelu1"] = nn.GELU()
        layers["fc2"] = nn.Linear(hidden_dim, hidden_dim)
        layers["bn2"] = nn.BatchNorm1d(hidden_dim)
        layers["gelu2"] = nn.GELU()
        layers["fc3"] = nn.Linear(hidden_dim, output_dim)
        self.head = nn.Sequential(layers)
        for m in self.head.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.target_head = copy.deepcopy(self.head).requires_grad_(False)
        bound = (1.0 / output_dim) ** 0.5
        self.prototypes = nn.Parameter(torch.empty(num_prototypes, output_dim).uniform_(-bound, bound))
        off = label_smoothing / num_prototypes  # msn_train.py's one_hot
        labels = torch.full((num_prototypes, num_prototypes), off)
        labels.fill_diagonal_(1.0 - label_smoothing + off)
        self.register_buffer("proto_labels", labels)
        self.temperature, self.sharpen_temperature = temperature, sharpen_temperature
        self.me_max_weight, self.sinkhorn_iterations, self.patch_drop = me_max_weight, sinkhorn_iterations, patch_drop

    def num_kept(self, n):
        return int(np.floor(n * (1.0 - self.patch_drop)))

    @staticmethod
    def features(vit, images, keep=None):
        """deit's `forward_features`: class token of `vit` on `images` of any size, patches `keep` kept."""
        x = vit.patch_embed(vit.standardize(images)).flatten(2).transpose(1, 2)
        pos = vit.pos_embed[:, 1:]
        if x.shape[1] != pos.shape[1]:  # interpolate_pos_encoding
            g = vit.grid_size
            pos = F.interpolate(
                pos.reshape(1, g, g, -1).permute(0, 3, 1, 2), scale_factor=math.sqrt(x.shape[1] / g**2), mode="bicubic"
            )
            pos = pos.permute(0, 2, 3, 1).reshape(1, x.shape[1], -1)
        x = x + pos
        if keep is not None:
            keep = torch.as_tensor(keep, dtype=torch.long)
            if keep.ndim == 1:  # the official: one subset for the batch
                x = x[:, keep]
            else:
                x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        return vit.encode_tokens(x)[:, 0]

    def snn(self, z):
        z, prototypes = F.normalize(z), F.normalize(self.prototypes)
        return torch.softmax(z @ prototypes.T / self.temperature, dim=1) @ self.proto_labels

    def sinkhorn(self, q):
        q = q.T.clone()  # distributed_sinkhorn on one process
        k, b = q.shape
        q /= q.sum()
        for _ in range(self.sinkhorn_iterations):
            q /= q.sum(dim=1, keepdim=True)
            q /= k
            q /= q.sum(dim=0, keepdim=True)
            q /= b
        return (q * b).T

    def loss(self, anchors, target):
        """`init_msn_loss`'s loss: `anchors` `(V * B, D)` view-major, `target` `(B, D)` -> (ce, me_max)."""
        probs = self.snn(anchors)
        with torch.no_grad():
            sharp = self.snn(target) ** (1.0 / self.sharpen_temperature)
            targets = sharp / sharp.sum(dim=1, keepdim=True)
            if self.sinkhorn_iterations:
                targets = self.sinkhorn(targets)
            targets = torch.cat([targets] * (anchors.shape[0] // target.shape[0]))
        cross_entropy = torch.mean(torch.sum(torch.log(probs ** (-targets)), dim=1))
        avg = probs.mean(dim=0)
        me_max = -torch.sum(torch.log(avg ** (-avg))) + math.log(float(len(avg)))
        return cross_entropy, me_max

    def forward(self, views, keep=None):
        anchor_views, n = views[1:], self.encoder.num_patches
        if keep is None:
            keep = torch.randperm(n)[: self.num_kept(n)]
        anchors, start = [], 0
        while start < len(anchor_views):  # deit's forward: consecutive same-size crops together
            end = start
            while end < len(anchor_views) and anchor_views[end].shape[-1] == anchor_views[start].shape[-1]:
                end += 1
            group = torch.cat(anchor_views[start:end])
            group_keep = None
            if start == 0 and self.num_kept(n) < n:
                group_keep = (
                    keep if torch.as_tensor(keep).ndim == 1 else torch.cat([torch.as_tensor(keep)] * (end - start))
                )
            anchors.append(self.head(self.features(self.encoder, group, group_keep)))
            start = end
        anchors = torch.cat(anchors)
        with torch.no_grad():
            target = self.target_head(self.features(self.target_encoder, views[0]))
        cross_entropy, me_max = self.loss(anchors, target)
        loss = cross_entropy + self.me_max_weight * me_max
        return {
            "loss": loss,
            "cross_entropy": cross_entropy,
            "me_max": me_max,
            "anchors": anchors,
            "target": target,
            "keep": keep,
        }


def _msn_head_entries(head):
    for i in (1, 2):
        yield getattr(head, f"fc{i}").weight, "dense"
        yield getattr(head, f"fc{i}").bias, None
        yield getattr(head, f"bn{i}").weight, None
        yield getattr(head, f"bn{i}").bias, None
        yield getattr(head, f"bn{i}").running_mean, None
        yield getattr(head, f"bn{i}").running_var, None
    yield head.fc3.weight, "dense"
    yield head.fc3.bias, None


@torch.no_grad()
def msn_from_keras(module, model):
    """Copies a keras_ssl `MSN` (encoder, target encoder, both heads, prototypes) into the reference `MSN`."""
    import keras

    from_keras(module.encoder, model.encoder)
    from_keras(module.target_encoder, model.target_encoder)
    for ref_head, keras_head in ((module.head, model.head), (module.target_head, model.target_head)):
        arrays = []
        for layer in keras_head.blocks:
            arrays += [keras.ops.convert_to_numpy(w) for w in layer.weights]  # Dense: kernel, bias; BN: 4
        entries = list(_msn_head_entries(ref_head))
        if len(arrays) != len(entries):
            raise ValueError(f"head layouts differ: {len(arrays)} keras weights, {len(entries)} reference")
        for (tensor, kind), array in zip(entries, arrays):
            tensor.copy_(_to_torch(array, kind, tensor.shape))
    module.prototypes.copy_(torch.from_numpy(keras.ops.convert_to_numpy(model.prototypes)))
