"""Plain-PyTorch reference implementations of image SSL methods, for benchmarks/parity.py.

Eight here; the rest of the catalogue in torch_methods_catalogue.py.

Written from each paper's official code (never imported from keras_ssl):

- BYOL (deepmind/deepmind-research byol): 2-layer projector and predictor, loss
  `2 - 2 cos` both ways, target EMA after the optimizer step with the cosine
  momentum `1 - (1 - tau0) (cos(pi k / K) + 1) / 2`, views encoded one at a time.
- DINO (facebookresearch/dino): GELU MLP head, L2 bottleneck, weight-normalised
  last layer (g fixed to 1), centred and sharpened teacher, centre EMA after the
  loss, teacher on the 2 global crops, last layer frozen for the first epoch
  (its gradient dropped), cosine teacher momentum updated after the step.
- SimCLR (google-research/simclr): 2-layer projector, NT-Xent over the 2B views
  (the two views concatenated through the network, as its TPU code).
- MoCo v2 (facebookresearch/moco): 2-layer MLP without BN, queue of keys,
  logits `[q.k+, q.queue] / T`, key encoder EMA before the keys; shuffle-BN
  simulated with `num_splits` sub-batches (queries contiguous, keys shuffled).
- Barlow Twins (facebookresearch/barlowtwins): 3-layer projector, BN without
  affine on each view, cross-correlation `/ B`, `on + lambd * off`.
- SwAV (facebookresearch/swav): projector, L2, prototypes normalised in place
  before every step and frozen (gradient dropped) for the first epoch,
  Sinkhorn-Knopp (3 iterations, eps 0.05) on the 2 global crops, swapped
  prediction averaged over the other crops; the encoder runs once per
  resolution, the head once over all crops.
- SimSiam (facebookresearch/simsiam): 3-layer projector with BN(affine=False)
  output, bottleneck predictor, `-(cos(p1, sg z2) + cos(p2, sg z1)) / 2`.
- VICReg (facebookresearch/vicreg): 3-layer projector, `25 inv + 25 var + 1 cov`,
  unbiased (co)variances, eps 1e-4.

The heads mirror keras_ssl's parameter layout (a bias is left out before a
BatchNorm and may sit on a layer whose output is standardised, where it is
cancelled), so `keras_weights()` hands the very same initial weights to the
Keras side. The ResNet-18 pads its stride-2 convolutions as Keras's "same"
(one pixel at the bottom/right), so both encoders compute the same function.
Views are batched tensor ops with per-image draws: torchvision's
RandomResizedCrop box sampler, bilinear resampling without antialiasing,
flip, ColorJitter in a random order per image (torchvision's), grayscale,
solarisation.
"""

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ------------------------------------------------------------------ encoder


class ResNet18(nn.Module):
    """CIFAR ResNet-18 (3x3 stem, no max-pool) with keras_ssl's layer names and widths."""

    def __init__(self, width=1.0):
        super().__init__()
        base = max(16, int(round(64 * width)))  # keras_ssl's floor of 16 stem channels
        self.convs, self.bns, self.blocks = nn.ModuleDict(), nn.ModuleDict(), []
        self._conv("stem", 3, base, 3, 1)
        cin = base
        for stage in range(4):
            for i in range(2):
                cout, stride = base * 2**stage, 2 if stage > 0 and i == 0 else 1
                name = f"stage{stage + 1}_block{i + 1}"
                self._conv(f"{name}_1", cin, cout, 3, stride)
                self._conv(f"{name}_2", cout, cout, 3, 1)
                if stride != 1 or cin != cout:
                    self._conv(f"{name}_proj", cin, cout, 1, stride)
                self.blocks.append((name, stride))
                cin = cout
        self.feature_dim = cin

    def _conv(self, name, cin, cout, k, stride):
        # Stride 1: "same" is symmetric, the convolution pads; stride 2: Keras pads after (below).
        self.convs[name] = nn.Conv2d(cin, cout, k, stride, padding=k // 2 if stride == 1 else 0, bias=False)
        self.bns[name] = nn.BatchNorm2d(cout)

    def _cbn(self, name, x):
        conv = self.convs[name]
        if conv.stride[0] > 1:
            k, s, size = conv.kernel_size[0], conv.stride[0], x.shape[-1]
            pad = max((math.ceil(size / s) - 1) * s + k - size, 0)  # Keras/TF "same": the extra pixel after
            if pad:
                x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        return self.bns[name](conv(x))

    def forward(self, x):
        x = x.contiguous(memory_format=torch.channels_last)  # PyTorch's faster CPU layout; same numbers
        x = F.relu(self._cbn("stem", x))
        for name, _ in self.blocks:
            y = self._cbn(f"{name}_2", F.relu(self._cbn(f"{name}_1", x)))
            short = self._cbn(f"{name}_proj", x) if f"{name}_proj" in self.convs else x
            x = F.relu(y + short)
        return x.mean((2, 3))


def mlp(din, hidden, dout, layers=2, bn=True, last_bias=None, out_bn=False, act=nn.ReLU):
    """keras_ssl's ProjectionHead layout: Linear(no bias before BN)-BN-act ..., Linear, optional BN(affine=False)."""
    last_bias = (not out_bn) if last_bias is None else last_bias
    mods, d = [], din
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden, bias=not bn)] + ([nn.BatchNorm1d(hidden)] if bn else []) + [act()]
        d = hidden
    mods.append(nn.Linear(d, dout, bias=last_bias))
    if out_bn:
        mods.append(nn.BatchNorm1d(dout, affine=False))
    return nn.Sequential(*mods)


# --------------------------------------------------------------- initialisation


def _keras_trunc_normal(w, std):
    # Keras's TruncatedNormal: redrawn beyond 2 stddev
    nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)


def initialise(module, mode, dino_head=None):
    """Re-draws `module`'s weights. `mode`:

    - "torch": PyTorch's module defaults (kaiming-uniform a=sqrt(5)), what the
      official codes get unless they override it (DINO's MLP: trunc normal 0.02).
    - "torchvision": convolutions kaiming-normal fan-out (torchvision's ResNet,
      which MoCo, SimSiam, Barlow Twins, VICReg, SwAV and DINO train), the rest as "torch".
    - "keras": Keras's conventions (keras_ssl's former defaults): He-normal (truncated) convolutions,
      Glorot-uniform Dense and prototypes, zero biases, DINO head trunc normal 0.02.
    """
    if mode not in ("torch", "torchvision", "keras"):
        raise ValueError(f"init must be torch, torchvision or keras, got {mode!r}")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()  # PyTorch's default
            if mode == "torchvision" and isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if mode == "keras":
                if isinstance(m, nn.Conv2d):
                    fan_in = m.weight[0].numel()
                    _keras_trunc_normal(m.weight.data, math.sqrt(2.0 / fan_in) / 0.87962566103423978)
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# -------------------------------------------------------------------- views


def _gray(x):
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _hue(x, shift):
    """torchvision's adjust_hue: RGB -> HSV, hue + shift (turns), back (hexcone formula without branches)."""
    r, g, b = x.unbind(1)
    value, low = x.max(1).values, x.min(1).values
    chroma = value - low
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    hue = torch.where(value == r, (g - b) / safe, torch.where(value == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue)) + shift[:, None, None]
    hue6 = 6 * (hue - torch.floor(hue))
    saturation = chroma / torch.where(value > 0, value, torch.ones_like(value))
    out = [
        value - value * saturation * torch.minimum((n + hue6) % 6, 4 - (n + hue6) % 6).clamp(0, 1) for n in (5, 3, 1)
    ]
    return torch.stack(out, 1)


class Augment:
    """One view pipeline: RandomResizedCrop(+flip), ColorJitter p, Grayscale p, Solarize p."""

    def __init__(self, size, scale, jitter, p_jitter=0.8, p_gray=0.2, p_solarize=0.0, ratio=(3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio, self.jitter = size, scale, ratio, jitter
        self.p_jitter, self.p_gray, self.p_solarize = p_jitter, p_gray, p_solarize

    def boxes(self, b, height, width, gen):
        """torchvision's RandomResizedCrop.get_params, per image: 10 tries, else the centre crop."""
        area = torch.empty(b, 10).uniform_(*self.scale, generator=gen) * height * width
        logr = torch.empty(b, 10).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]), generator=gen)
        w = torch.round(torch.sqrt(area * torch.exp(logr)))
        h = torch.round(torch.sqrt(area / torch.exp(logr)))
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = ok.float().argmax(1, keepdim=True)
        found = ok.any(1)
        w = torch.where(found, w.gather(1, first)[:, 0], torch.full((b,), float(width)))
        h = torch.where(found, h.gather(1, first)[:, 0], torch.full((b,), float(height)))
        top = torch.floor(torch.rand(b, generator=gen) * (height - h + 1))
        left = torch.floor(torch.rand(b, generator=gen) * (width - w + 1))
        top = torch.where(found, top, torch.floor((height - h) / 2))
        left = torch.where(found, left, torch.floor((width - w) / 2))
        return top, left, h, w

    def __call__(self, x, gen):
        b, _, height, width = x.shape
        top, left, h, w = self.boxes(b, height, width, gen)
        flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
        # Bilinear, align_corners=False: output pixel j samples left + (j + 0.5) w / size - 0.5.
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = flip * w / width, (2 * left + w) / width - 1
        theta[:, 1, 1], theta[:, 1, 2] = h / height, (2 * top + h) / height - 1
        grid = F.affine_grid(theta, (b, 3, self.size, self.size), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.p_jitter > 0:
            x = _where(torch.rand(b, generator=gen) < self.p_jitter, self.color_jitter(x, gen), x)
        if self.p_gray > 0:
            x = _where(torch.rand(b, generator=gen) < self.p_gray, _gray(x).expand_as(x), x)
        if self.p_solarize > 0:
            x = _where(torch.rand(b, generator=gen) < self.p_solarize, torch.where(x >= 0.5, 1 - x, x), x)
        return x

    def color_jitter(self, x, gen):
        """torchvision's ColorJitter, with each image's own factors and order of the four ops."""
        b = x.shape[0]
        bri, con, sat, hue = self.jitter
        factor = lambda s: torch.empty(b).uniform_(max(0.0, 1 - s), 1 + s, generator=gen)[:, None, None, None]
        fb, fc, fs = factor(bri), factor(con), factor(sat)
        fh = torch.empty(b).uniform_(-hue, hue, generator=gen)
        order = torch.argsort(torch.rand(b, 4, generator=gen), 1)
        ops = [
            lambda y, i: (y * fb[i]).clamp(0, 1),
            lambda y, i: (fc[i] * y + (1 - fc[i]) * _gray(y).mean((1, 2, 3), keepdim=True)).clamp(0, 1),
            lambda y, i: (fs[i] * y + (1 - fs[i]) * _gray(y)).clamp(0, 1),
            lambda y, i: _hue(y, fh[i]),
        ]
        x = x.clone()
        for position in range(4):  # each op runs on the images that have it at this position
            for k, op in enumerate(ops):
                rows = (order[:, position] == k).nonzero()[:, 0]
                if len(rows):
                    x[rows] = op(x[rows], rows)
        return x


def _where(mask, a, b):
    return torch.where(mask[:, None, None, None], a, b)


def simclr_jitter(s):
    return (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)


BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)


def byol_pair(scale=(0.08, 1.0)):
    """BYOL's asymmetric pair of pipelines (solarisation on the second only; no blur at 32 px)."""
    return [Augment(32, scale, BYOL_JITTER), Augment(32, scale, BYOL_JITTER, p_solarize=0.2)]


# ------------------------------------------------------------------ methods


class Method(nn.Module):
    """Base: `views(x, gen)`, `loss(views, step)`, `before_step`/`after_step` hooks.

    `keras_heads` maps each keras_ssl head attribute to the torch module whose
    parameters, in order, are that head's trainable weights.
    """

    keras_heads = {}
    steps_per_epoch = 1
    total_steps = 1

    def __init__(self, width):
        super().__init__()
        self.encoder = ResNet18(width)
        self.dim = self.encoder.feature_dim

    joint_views = False

    def encode(self, views, encoder=None):
        """The encoder once per view (the official codes of BYOL, SimSiam, Barlow Twins, VICReg).

        `joint_views` (parity.py's `--torch-bn joint`) runs same-size views together, as keras_ssl does.
        """
        if self.joint_views:
            return self.encode_groups(views, encoder)
        return [(encoder or self.encoder)(v) for v in views]

    def encode_groups(self, views, encoder=None):
        """The encoder once per run of same-size views (SimCLR's concat, DINO's and SwAV's MultiCropWrapper)."""
        out, i = [], 0
        while i < len(views):
            j = i
            while j < len(views) and views[j].shape[-1] == views[i].shape[-1]:
                j += 1
            out += list((encoder or self.encoder)(torch.cat(views[i:j])).chunk(j - i))
            i = j
        return out

    num_views = 2

    def views(self, x, gen):
        """One view per pipeline when `augment` is a list, else `num_views` views of the one pipeline."""
        if isinstance(self.augment, list):
            return [a(x, gen) for a in self.augment]
        return [self.augment(x, gen) for _ in range(self.num_views)]

    def before_step(self, step):
        pass

    def after_step(self, step):
        pass

    def drop_frozen_grads(self, step):
        pass

    def trainable(self):
        return [p for p in self.parameters() if p.requires_grad]

    def momentum_at(self, step, base, end=1.0):
        return end - (end - base) * (math.cos(math.pi * step / self.total_steps) + 1) / 2

    @torch.no_grad()
    def ema(self, online, target, tau):
        for o, t in zip(online.parameters(), target.parameters()):
            t.mul_(tau).add_(o.detach(), alpha=1 - tau)

    def keras_weights(self, grad=False):
        """Weights (or, with `grad`, their gradients: zeros where None) in keras_ssl's layout.

        {"enc/<layer>/<var>": array, "head/<attr>/<i>": array}; the arrays share the tensors' memory.
        """
        value = lambda p: (torch.zeros_like(p) if p.grad is None else p.grad) if grad else p
        out = {}
        for name, conv in self.encoder.convs.items():
            out[f"enc/{name}_conv/kernel"] = value(conv.weight).detach().permute(2, 3, 1, 0).numpy()
            bn = self.encoder.bns[name]
            out[f"enc/{name}_bn/gamma"], out[f"enc/{name}_bn/beta"] = (
                value(bn.weight).detach().numpy(),
                value(bn.bias).detach().numpy(),
            )
        for attr, params in self.keras_head_params().items():
            for i, p in enumerate(params):
                p = value(p).detach().numpy()
                out[f"head/{attr}/{i}"] = p.T if p.ndim == 2 else p  # Linear (out, in) -> Dense (in, out)
        return out

    def keras_head_params(self):
        return {
            attr: [p for p in getattr(self, mod).parameters() if p.requires_grad]
            for attr, mod in self.keras_heads.items()
        }


def _copy_target(online):
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad = False
    return target


class BYOL(Method):
    keras_heads = {"projector": "projector", "predictor": "predictor"}

    def __init__(self, width, projection_dim=256, hidden_dim=None, momentum=0.996, momentum_end=1.0):
        super().__init__(width)
        hidden = hidden_dim or min(4096, 4 * self.dim)
        self.projector = mlp(self.dim, hidden, projection_dim)
        self.predictor = mlp(projection_dim, hidden, projection_dim)
        self.tau0, self.tau1 = momentum, momentum_end
        self.augment = byol_pair()

    def make_targets(self):
        self.target_encoder, self.target_projector = _copy_target(self.encoder), _copy_target(self.projector)

    def loss(self, views, step):
        p = [self.predictor(self.projector(h)) for h in self.encode(views)]
        with torch.no_grad():
            t = [self.target_projector(h) for h in self.encode(views, self.target_encoder)]
        cos = lambda a, b: F.cosine_similarity(a, b, dim=-1)
        return (2 - 2 * cos(p[0], t[1])).mean() + (2 - 2 * cos(p[1], t[0])).mean()

    def after_step(self, step):
        tau = self.momentum_at(step, self.tau0, self.tau1)
        self.ema(self.encoder, self.target_encoder, tau)
        self.ema(self.projector, self.target_projector, tau)


class WeightNormLinear(nn.Module):
    """`nn.utils.weight_norm(nn.Linear(d, k, bias=False))` with g fixed to 1 (DINO's norm_last_layer)."""

    def __init__(self, din, dout):
        super().__init__()
        self.weight_v = nn.Parameter(nn.Linear(din, dout, bias=False).weight.detach().clone())

    def forward(self, x):
        return F.linear(x, self.weight_v / self.weight_v.norm(dim=1, keepdim=True))


class DINOHead(nn.Module):
    """DINO's head (3 layers); `use_bn`: BatchNorm1d between each hidden Linear and its GELU."""

    def __init__(self, din, out_dim, hidden, bottleneck, use_bn=False):
        super().__init__()
        norm = (lambda: [nn.BatchNorm1d(hidden)]) if use_bn else list
        self.mlp = nn.Sequential(
            *[nn.Linear(din, hidden), *norm(), nn.GELU(), nn.Linear(hidden, hidden), *norm(), nn.GELU()],
            nn.Linear(hidden, bottleneck),
        )
        self.last_layer = WeightNormLinear(bottleneck, out_dim)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, eps=1e-12))


class DINO(Method):
    keras_heads = {"head": "head"}

    def __init__(
        self,
        width,
        output_dim=4096,
        hidden_dim=None,
        bottleneck_dim=256,
        use_bn_in_head=False,
        student_temperature=0.1,
        teacher_temperature=0.04,
        center_momentum=0.9,
        momentum=0.996,
        momentum_end=1.0,
        num_local=4,
    ):
        super().__init__(width)
        hidden = hidden_dim or min(2048, 4 * self.dim)
        self.head = DINOHead(self.dim, output_dim, hidden, bottleneck_dim, use_bn_in_head)
        self.st, self.tt, self.cm = student_temperature, teacher_temperature, center_momentum
        self.tau0, self.tau1 = momentum, momentum_end
        self.register_buffer("center", torch.zeros(1, output_dim))
        g = [Augment(32, (0.4, 1.0), BYOL_JITTER), Augment(32, (0.4, 1.0), BYOL_JITTER, p_solarize=0.2)]
        self.augment = g + [Augment(16, (0.05, 0.4), BYOL_JITTER) for _ in range(num_local)]

    def init_head(self, mode):
        # The official head: trunc_normal_(std=.02) MLP, zero biases; the last layer keeps nn.Linear's default.
        for m in self.head.mlp:
            if isinstance(m, nn.Linear):
                (_keras_trunc_normal if mode == "keras" else lambda w, s: nn.init.trunc_normal_(w, std=s))(
                    m.weight.data, 0.02
                )
                nn.init.zeros_(m.bias)
        if mode == "keras":
            _keras_trunc_normal(self.head.last_layer.weight_v.data, 0.02)

    def keras_head_params(self):
        # keras_ssl's DINOHead lists its own `last_v`, then the Dense layers', then the BatchNorms'.
        mlp = list(self.head.mlp)
        dense = [p for m in mlp if isinstance(m, nn.Linear) for p in m.parameters()]
        norms = [p for m in mlp if isinstance(m, nn.BatchNorm1d) for p in m.parameters()]
        return {"head": [self.head.last_layer.weight_v] + dense + norms}

    def make_targets(self):
        self.teacher_encoder, self.teacher_head = _copy_target(self.encoder), _copy_target(self.head)

    def loss(self, views, step):
        student = self.head(torch.cat(self.encode_groups(views))) / self.st
        with torch.no_grad():
            teacher = self.teacher_head(torch.cat(self.encode_groups(views[:2], self.teacher_encoder)))
        q = F.softmax((teacher - self.center) / self.tt, dim=-1).chunk(2)
        s = student.chunk(len(views))
        total, terms = 0.0, 0
        for iq, qi in enumerate(q):
            for v, sv in enumerate(s):
                if v != iq:
                    total = total + torch.sum(-qi * F.log_softmax(sv, dim=-1), dim=-1).mean()
                    terms += 1
        with torch.no_grad():
            self.center.mul_(self.cm).add_(teacher.mean(0, keepdim=True), alpha=1 - self.cm)
        return total / terms

    def drop_frozen_grads(self, step):
        if step < self.steps_per_epoch:  # freeze_last_layer = 1 epoch
            self.head.last_layer.weight_v.grad = None

    def after_step(self, step):
        tau = self.momentum_at(step, self.tau0, self.tau1)
        self.ema(self.encoder, self.teacher_encoder, tau)
        self.ema(self.head, self.teacher_head, tau)


class SimCLR(Method):
    keras_heads = {"projector": "projector"}

    def __init__(self, width, temperature=0.5, projection_dim=128, hidden_dim=None):
        super().__init__(width)
        self.projector = mlp(self.dim, hidden_dim or self.dim, projection_dim, out_bn=True)
        self.t = temperature
        self.augment = Augment(32, (0.08, 1.0), simclr_jitter(0.5))

    def loss(self, views, step):
        z = F.normalize(self.projector(torch.cat(self.encode_groups(views))), dim=1)
        n = z.shape[0]
        logits = (z @ z.T / self.t).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
        return F.cross_entropy(logits, (torch.arange(n) + n // 2) % n)


class MoCoV2(Method):
    keras_heads = {"projector": "projector"}

    def __init__(
        self, width, temperature=0.2, queue_size=4096, projection_dim=128, hidden_dim=None, momentum=0.99, num_splits=4
    ):
        super().__init__(width)
        self.projector = mlp(self.dim, hidden_dim or self.dim, projection_dim, bn=False)
        self.t, self.m, self.splits = temperature, momentum, num_splits
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, projection_dim), dim=1))
        self.ptr = 0
        self.augment = Augment(32, (0.2, 1.0), simclr_jitter(0.5))

    def make_targets(self):
        self.key_encoder, self.key_projector = _copy_target(self.encoder), _copy_target(self.projector)

    def loss(self, views, step):
        x1, x2 = views
        # Each simulated GPU's BatchNorm sees its own sub-batch of queries.
        q = F.normalize(torch.cat([self.projector(self.encoder(c)) for c in x1.chunk(self.splits)]), dim=1)
        with torch.no_grad():
            self.ema(self.encoder, self.key_encoder, self.m)
            self.ema(self.projector, self.key_projector, self.m)
            perm = torch.randperm(x2.shape[0])  # shuffle-BN: keys batched across "GPUs" in a random order
            k = torch.cat([self.key_projector(self.key_encoder(c)) for c in x2[perm].chunk(self.splits)])
            k = F.normalize(k[torch.argsort(perm)], dim=1)
        queue = self.queue.clone()  # enqueued below, before the backward pass reads it
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / self.t
        loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))
        with torch.no_grad():
            b = k.shape[0]
            idx = (self.ptr + torch.arange(b)) % self.queue.shape[0]
            self.queue[idx] = k
            self.ptr = (self.ptr + b) % self.queue.shape[0]
        return loss


class BarlowTwins(Method):
    keras_heads = {"projector": "projector"}

    def __init__(self, width, projection_dim=None, lambd=5e-3):
        super().__init__(width)
        p = projection_dim or min(2048, 8 * self.dim)
        self.projector = mlp(self.dim, p, p, layers=3)
        self.bn = nn.BatchNorm1d(p, affine=False)
        self.lambd = lambd
        self.augment = byol_pair()

    def loss(self, views, step):
        z1, z2 = (self.projector(h) for h in self.encode(views))
        c = self.bn(z1).T @ self.bn(z2) / z1.shape[0]
        on = (torch.diagonal(c) - 1).pow(2).sum()
        off = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
        return on + self.lambd * off


class SwAV(Method):
    keras_heads = {"projector": "projector", "prototypes": "prototypes"}

    def __init__(
        self,
        width,
        num_prototypes=512,
        projection_dim=128,
        hidden_dim=None,
        temperature=0.1,
        epsilon=0.05,
        iterations=3,
        num_local=4,
    ):
        super().__init__(width)
        self.projector = mlp(self.dim, hidden_dim or min(2048, 4 * self.dim), projection_dim)
        self.prototypes = nn.Linear(projection_dim, num_prototypes, bias=False)
        self.t, self.eps, self.iters = temperature, epsilon, iterations
        j = simclr_jitter(0.5)
        self.augment = [Augment(32, (0.14, 1.0), j) for _ in range(2)] + [
            Augment(16, (0.05, 0.14), j) for _ in range(num_local)
        ]

    def before_step(self, step):
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    @torch.no_grad()
    def sinkhorn(self, scores):
        q = torch.exp(scores / self.eps).T
        k, b = q.shape
        q /= q.sum()
        for _ in range(self.iters):
            q /= q.sum(1, keepdim=True)
            q /= k
            q /= q.sum(0, keepdim=True)
            q /= b
        return (q * b).T

    def loss(self, views, step):
        z = F.normalize(self.projector(torch.cat(self.encode_groups(views))), dim=1)
        scores = self.prototypes(z).chunk(len(views))
        total = 0.0
        for i in (0, 1):
            q = self.sinkhorn(scores[i].detach())
            sub = sum(
                -torch.mean(torch.sum(q * F.log_softmax(scores[v] / self.t, dim=1), dim=1))
                for v in range(len(views))
                if v != i
            )
            total = total + sub / (len(views) - 1)
        return total / 2

    def drop_frozen_grads(self, step):
        if step < self.steps_per_epoch:  # freeze_prototypes_niters = 1 epoch
            self.prototypes.weight.grad = None


class SimSiam(Method):
    keras_heads = {"projector": "projector", "predictor": "predictor"}

    def __init__(self, width, projection_dim=None, prediction_dim=None):
        super().__init__(width)
        p = projection_dim or min(2048, 4 * self.dim)
        self.projector = mlp(self.dim, p, p, layers=3, out_bn=True)
        self.predictor = mlp(p, prediction_dim or max(1, p // 4), p)
        self.augment = Augment(32, (0.2, 1.0), simclr_jitter(0.5))

    def loss(self, views, step):
        z1, z2 = (self.projector(h) for h in self.encode(views))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        cos = lambda a, b: F.cosine_similarity(a, b.detach(), dim=-1).mean()
        return -(cos(p1, z2) + cos(p2, z1)) * 0.5


class VICReg(Method):
    keras_heads = {"projector": "projector"}

    def __init__(self, width, projection_dim=None, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=1e-4):
        super().__init__(width)
        p = projection_dim or min(2048, 8 * self.dim)
        self.projector = mlp(self.dim, p, p, layers=3)
        self.coeffs, self.eps = (sim_coeff, std_coeff, cov_coeff), eps
        self.augment = byol_pair()

    def loss(self, views, step):
        x, y = (self.projector(h) for h in self.encode(views))
        b, d = x.shape
        inv = F.mse_loss(x, y)
        x, y = x - x.mean(0), y - y.mean(0)
        std = lambda z: torch.sqrt(z.var(0) + self.eps)
        var = torch.mean(F.relu(1 - std(x))) / 2 + torch.mean(F.relu(1 - std(y))) / 2
        off = lambda c: (c - torch.diag(torch.diagonal(c))).pow(2).sum()
        cov = off(x.T @ x / (b - 1)) / d + off(y.T @ y / (b - 1)) / d
        sim, st, co = self.coeffs
        return sim * inv + st * var + co * cov


METHODS = {
    "byol": BYOL,
    "dino": DINO,
    "simclr": SimCLR,
    "moco2": MoCoV2,
    "barlow_twins": BarlowTwins,
    "swav": SwAV,
    "simsiam": SimSiam,
    "vicreg": VICReg,
}


def build(name, width, options, init, steps_per_epoch, total_steps, seed):
    """The method `name` with its weights drawn under `init` from `seed`, targets copied from the online nets."""
    import torch_methods_catalogue  # the rest of the catalogue; it imports this module's helpers

    torch.manual_seed(seed)
    method = {**METHODS, **torch_methods_catalogue.METHODS}[name](width, **options)
    if not getattr(method, "own_init", False):  # the ViT methods keep their official code's initialisation
        initialise(method, init)
    if hasattr(method, "init_head"):
        method.init_head(init)
    method.encoder.to(memory_format=torch.channels_last)
    if hasattr(method, "make_targets"):
        method.make_targets()
    method.steps_per_epoch, method.total_steps = steps_per_epoch, total_steps
    return method


def views_generator(seed):
    """The generator of the reference's augmentations (independent of the weights' stream)."""
    gen = torch.Generator()
    gen.manual_seed(int(np.random.default_rng([seed, 7]).integers(2**31)))
    return gen
