"""Plain-PyTorch iBOT and DINOv2 references (one training step's loss), checked against keras_ssl.

Written from the official code, never imported from keras_ssl:

- bytedance/ibot (facebookresearch/ibot): `main_ibot.py` (`iBOTLoss`: the [CLS] loss over
  (teacher global crop q, student crop v != q), the MIM loss on the masked patches of global crop
  q for v == q, each averaged over its terms, separate centres `center`, `center2` and teacher
  temperatures with their per-epoch `np.linspace` warm-up, `lambda1`, `lambda2`, `update_center`;
  `train_one_epoch`'s calls), `models/head.py` (`DINOHead`, `iBOTHead`: one MLP, `last_layer` on
  the class token, `last_layer2` on the patches, the same module when `shared_head`),
  `models/vision_transformer.py` (`prepare_tokens`, `mask_model`, `interpolate_pos_encoding`
  with its 0.1 offset), `utils.py` (`MultiCropWrapper`: same-size crops in one call).
- facebookresearch/dinov2: `dinov2/train/ssl_meta_arch.py` (`forward_backward`: teacher class
  tokens swapped between the global crops, heads on the class tokens and the masked patches
  gathered into an `upperbound` buffer, the local and global DINO terms over
  `n_global_crops_loss_terms + n_local_crops_loss_terms`, KoLeo per global crop, the patch loss
  times `loss_scales * ibot_loss_scale`), `dinov2/loss/dino_clstoken_loss.py` (`DINOLoss`,
  `sinkhorn_knopp_teacher`, `softmax_center_teacher`), `dinov2/loss/ibot_patch_loss.py`
  (`iBOTPatchLoss.forward_masked`, its Sinkhorn with `B` the masked patches), `dinov2/loss/
  koleo_loss.py`, `dinov2/layers/dino_head.py`, `dinov2/data/collate.py` (`mask_indices_list`,
  `masks_weight`, `upperbound`), `dinov2/models/vision_transformer.py`
  (`prepare_tokens_with_masks`, `interpolate_pos_encoding`: offset 0.1 or an output size).

The backbone is `torch_vit.ViT` (the same pre-norm blocks, LayerScale as `gamma_1`, `gamma_2`);
`tokens` adds the official code's mask token and position interpolation. Registers are not
covered (`torch_vit.ViT.like` refuses them).

keras_ssl's IBOT and DINOv2 against the official code, as this reference found them (shown by
value in tests/test_parity_ibot.py):

1. Local crops' positions: the official codes resize the position table with
   `scale_factor=(g_local + 0.1) / g` (iBOT always, DINOv2's default `interpolate_offset: 0.1`),
   keras_ssl to the output size (DINOv2's `interpolate_offset: 0`). Given `offset=0`, the losses
   agree to 1e-5; the 0.1 offset moves the bicubic sample points: ViT-S/16's 14 x 14 table at a
   96-pixel crop's 6 x 6 changes by 29% (relative norm) for a random N(0, 0.02^2) table, 5% for
   a smooth (sine-cosine) one; the local crops' class tokens, and the [CLS] loss, follow.
2. Teacher-temperature warm-up: the official `np.linspace(warmup, final, W)` reaches `final` at
   index `W - 1` (iBOT per epoch, DINOv2 per iteration); keras_ssl's `warmup_teacher_steps=W`
   reached it at step `W` until 2026-12-08, and now at `W - 1` (per step).
3. iBOT's `shared_head=False` differs: the official `--shared_head false` keeps one MLP and gives
   the student's patches their own last layer only, the teacher keeping the shared head
   (`--shared_head_teacher true`); keras_ssl's `shared_head=False` is a whole second head for
   both (DINOv2's `ibot.separate_head`). The paper's runs use `--shared_head true`, which agrees.
4. DINOv2 without local crops: `n_local_crops_loss_terms = max(0, 1)` makes the official class
   loss 2/3 of the mean over the 2 crop pairs; keras_ssl keeps the mean.
5. DINOv2's last layer: the official's weight-norm scale `weight_g` is trained (no
   `norm_last_layer`); keras_ssl's DINOv2 inherited DINO's `norm_last_layer=True` (fixed at 1)
   until 2026-12-08 and now trains it. Not in one step's loss.
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_vit import ViT, _to_torch, from_keras

__all__ = ["DINOHead", "DINOv2", "IBOT", "ViT", "dinov2_from_keras", "ibot_from_keras", "tokens"]


# ------------------------------------------------------------------ backbone


def patch_positions(vit, height, width, offset=0.1, antialias=False):
    """`interpolate_pos_encoding`'s patch positions `(1, height * width, D)` for a `height x width` grid.

    `offset` > 0: `scale_factor=((height + offset) / g, (width + offset) / g)` (iBOT, DINOv2's
    default 0.1); 0: `size=(height, width)` (DINOv2's `interpolate_offset: 0`).
    """
    pos, g = vit.pos_embed[:, 1:], vit.grid_size
    if (height, width) == (g, g):
        return pos
    grid = pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    if offset:
        sizing = {"scale_factor": ((height + offset) / g, (width + offset) / g)}
    else:
        sizing = {"size": (height, width)}
    grid = F.interpolate(grid, mode="bicubic", antialias=antialias, **sizing)
    if grid.shape[-2:] != (height, width):
        raise ValueError(f"interpolated to {tuple(grid.shape[-2:])}, not {(height, width)}")
    return grid.permute(0, 2, 3, 1).reshape(1, height * width, -1)


def tokens(vit, images, mask=None, mask_token=None, offset=0.1):
    """The official forward to the normed tokens `(B, 1 + N, D)`, class token first.

    `mask` `(B, N)` bool: those patch embeddings become `mask_token` before the positions
    (iBOT's `mask_model`, DINOv2's `torch.where`).
    """
    x = vit.patch_embed(vit.standardize(images))
    b, d, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    if mask is not None:
        x = torch.where(mask.reshape(b, h * w, 1).bool(), mask_token.reshape(1, 1, d).to(x.dtype), x)
    return vit.encode_tokens(x + patch_positions(vit, h, w, offset))


# ------------------------------------------------------------------ heads


class WeightNormLinear(nn.Module):
    """`nn.utils.weight_norm(nn.Linear(in, out, bias=False))`: rows `g * v / |v|`."""

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.weight_v = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))

    def forward(self, x):
        return F.linear(x, self.weight_v * (self.weight_g / self.weight_v.norm(dim=1, keepdim=True)))


class DINOHead(nn.Module):
    """iBOT's `DINOHead` (norm None, GELU) and DINOv2's (`use_bn=False`), which compute the same:
    MLP (`nlayers` Linear, exact GELU between), L2 normalisation (eps 1e-12), weight-normed last layer."""

    def __init__(self, in_dim, out_dim, hidden_dim=2048, bottleneck_dim=256, nlayers=3):
        super().__init__()
        if nlayers == 1:
            self.mlp = nn.Sequential(nn.Linear(in_dim, bottleneck_dim))
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(nlayers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            self.mlp = nn.Sequential(*layers, nn.Linear(hidden_dim, bottleneck_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class iBOTHead(DINOHead):  # the official name
    """models/head.py `iBOTHead` with a bottleneck: `(B, D) -> (B, K)`; `(B, 1 + N, D) ->
    (last_layer(class token), last_layer2(patches))`, the MLP shared; `last_layer2` is
    `last_layer` when `shared_head`."""

    def __init__(self, in_dim, out_dim, patch_out_dim=None, shared_head=True, **kwargs):
        super().__init__(in_dim, out_dim, **kwargs)
        bottleneck = self.last_layer.weight_v.shape[1]
        self.shared_head = shared_head
        self.last_layer2 = self.last_layer if shared_head else WeightNormLinear(bottleneck, patch_out_dim or out_dim)

    def forward(self, x):
        if x.dim() == 2:
            return super().forward(x)
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x[:, 0]), self.last_layer2(x[:, 1:])


# ------------------------------------------------------------------ iBOT


class iBOTLoss(nn.Module):  # the official name
    """main_ibot.py's `iBOTLoss` on one process (`dist.all_reduce` over one rank)."""

    def __init__(
        self,
        out_dim,
        patch_out_dim,
        ngcrops,
        nlcrops,
        warmup_teacher_temp,
        teacher_temp,
        warmup_teacher_temp2,
        teacher_temp2,
        warmup_teacher_temp_epochs,
        nepochs,
        student_temp=0.1,
        center_momentum=0.9,
        center_momentum2=0.9,
        lambda1=1.0,
        lambda2=1.0,
        mim_start_epoch=0,
    ):
        super().__init__()
        self.student_temp, self.center_momentum, self.center_momentum2 = student_temp, center_momentum, center_momentum2
        self.ngcrops, self.nlcrops, self.ncrops = ngcrops, nlcrops, ngcrops + nlcrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center2", torch.zeros(1, 1, patch_out_dim))
        self.lambda1, self.lambda2 = lambda1, lambda2
        warm, rest = warmup_teacher_temp_epochs, nepochs - warmup_teacher_temp_epochs
        self.teacher_temp_schedule = np.concatenate(
            (np.linspace(warmup_teacher_temp, teacher_temp, warm), np.ones(rest) * teacher_temp)
        )
        if mim_start_epoch == 0:
            self.teacher_temp2_schedule = np.concatenate(
                (np.linspace(warmup_teacher_temp2, teacher_temp2, warm), np.ones(rest) * teacher_temp2)
            )
        else:
            self.teacher_temp2_schedule = np.concatenate(
                (
                    np.ones(mim_start_epoch) * warmup_teacher_temp2,
                    np.linspace(warmup_teacher_temp2, teacher_temp2, warm),
                    np.ones(rest - mim_start_epoch) * teacher_temp2,
                )
            )

    def forward(self, student_output, teacher_output, student_local_cls, student_mask, epoch):
        student_cls, student_patch = student_output
        teacher_cls, teacher_patch = teacher_output
        if student_local_cls is not None:
            student_cls = torch.cat([student_cls, student_local_cls])
        student_cls_c = (student_cls / self.student_temp).chunk(self.ncrops)
        student_patch_c = (student_patch / self.student_temp).chunk(self.ngcrops)
        temp, temp2 = self.teacher_temp_schedule[epoch], self.teacher_temp2_schedule[epoch]
        teacher_cls_c = F.softmax((teacher_cls - self.center) / temp, dim=-1).detach().chunk(self.ngcrops)
        teacher_patch_c = F.softmax((teacher_patch - self.center2) / temp2, dim=-1).detach().chunk(self.ngcrops)
        total1 = total2 = 0.0
        n1 = n2 = 0
        for q in range(len(teacher_cls_c)):
            for v in range(len(student_cls_c)):
                if v == q:
                    loss2 = torch.sum(-teacher_patch_c[q] * F.log_softmax(student_patch_c[v], dim=-1), dim=-1)
                    mask = student_mask[v].flatten(-2, -1) if student_mask[v].dim() == 3 else student_mask[v]
                    loss2 = torch.sum(loss2 * mask.float(), dim=-1) / mask.sum(dim=-1).clamp(min=1.0)
                    total2, n2 = total2 + loss2.mean(), n2 + 1
                else:
                    loss1 = torch.sum(-teacher_cls_c[q] * F.log_softmax(student_cls_c[v], dim=-1), dim=-1)
                    total1, n1 = total1 + loss1.mean(), n1 + 1
        total1, total2 = total1 / n1 * self.lambda1, total2 / n2 * self.lambda2
        self.update_center(teacher_cls, teacher_patch)
        return {"cls": total1, "patch": total2, "loss": total1 + total2}

    @torch.no_grad()
    def update_center(self, teacher_cls, teacher_patch):
        cls_center = torch.sum(teacher_cls, dim=0, keepdim=True) / len(teacher_cls)
        self.center = self.center * self.center_momentum + cls_center * (1 - self.center_momentum)
        patch_center = torch.sum(teacher_patch.mean(1), dim=0, keepdim=True) / len(teacher_patch)
        self.center2 = self.center2 * self.center_momentum2 + patch_center * (1 - self.center_momentum2)


class IBOT(nn.Module):
    """iBOT's `train_one_epoch` forward on one process: student and teacher `MultiCropWrapper`s
    around `ViT`s and `iBOTHead`s, and `iBOTLoss`.

    `forward(global_views, local_views, masks, epoch)`: NCHW crops in [0, 1] (2 global, then
    local ones of one size), `masks` one `(B, N)` bool per global crop. `offset`: the position
    interpolation's (the official's 0.1; 0 is keras_ssl's resize). The loss is built with
    `warmup_teacher_temp_epochs` and the temperatures as main_ibot.py's flags.
    """

    def __init__(
        self,
        encoder,
        out_dim=8192,
        patch_out_dim=8192,
        hidden_dim=2048,
        bottleneck_dim=256,
        nlayers=3,
        shared_head=True,
        shared_head_teacher=True,
        nlcrops=0,
        warmup_teacher_temp=0.04,
        teacher_temp=0.04,
        warmup_teacher_patch_temp=0.04,
        teacher_patch_temp=0.07,
        warmup_teacher_temp_epochs=30,
        epochs=100,
        lambda1=1.0,
        lambda2=1.0,
        offset=0.1,
    ):
        super().__init__()
        head = {"hidden_dim": hidden_dim, "bottleneck_dim": bottleneck_dim, "nlayers": nlayers}
        self.student = encoder
        self.student_head = iBOTHead(encoder.dim, out_dim, patch_out_dim, shared_head=shared_head, **head)
        self.teacher = copy.deepcopy(encoder).requires_grad_(False)
        self.teacher_head = iBOTHead(encoder.dim, out_dim, patch_out_dim, shared_head=shared_head_teacher, **head)
        self.teacher_head.load_state_dict(self.student_head.state_dict(), strict=False)
        self.teacher_head.requires_grad_(False)
        self.masked_embed = nn.Parameter(torch.zeros(1, encoder.dim))
        same_dim = shared_head or shared_head_teacher
        self.loss = iBOTLoss(
            out_dim,
            out_dim if same_dim else patch_out_dim,
            2,
            nlcrops,
            warmup_teacher_temp,
            teacher_temp,
            warmup_teacher_patch_temp,
            teacher_patch_temp,
            warmup_teacher_temp_epochs,
            epochs,
            lambda1=lambda1,
            lambda2=lambda2,
        )
        self.offset = offset

    def forward(self, global_views, local_views, masks, epoch=0):
        globals_ = torch.cat(list(global_views))
        with torch.no_grad():
            teacher_output = self.teacher_head(tokens(self.teacher, globals_, offset=self.offset))
        student_output = self.student_head(
            tokens(self.student, globals_, torch.cat(list(masks)), self.masked_embed, offset=self.offset)
        )
        local_cls = None
        if local_views:
            local_cls = self.student_head(tokens(self.student, torch.cat(list(local_views)), offset=self.offset))[0]
        out = self.loss(student_output, teacher_output, local_cls, masks, epoch)
        return {**out, "student": student_output, "teacher": teacher_output, "student_local_cls": local_cls}


# ------------------------------------------------------------------ DINOv2


def sinkhorn_knopp(teacher_output, teacher_temp, n_samples=None, n_iterations=3):
    """`DINOLoss.sinkhorn_knopp_teacher` (`n_samples` None: the rows) and `iBOTPatchLoss`'s
    (`n_samples` the masked patches), on one process."""
    q = torch.exp(teacher_output.float() / teacher_temp).t()
    b = q.shape[1] if n_samples is None else n_samples
    k = q.shape[0]
    q = q / torch.sum(q)
    for _ in range(n_iterations):
        q = q / torch.sum(q, dim=1, keepdim=True) / k
        q = q / torch.sum(q, dim=0, keepdim=True) / b
    return (q * b).t()


def dino_loss(student_output_list, teacher_list, student_temp=0.1):
    """`DINOLoss.forward`: the sum over (student, teacher) pairs of the mean cross-entropy."""
    total = 0.0
    for s in student_output_list:
        lsm = F.log_softmax(s / student_temp, dim=-1)
        for t in teacher_list:
            total = total - torch.sum(t * lsm, dim=-1).mean()
    return total


def koleo(student_output, eps=1e-8):
    """`KoLeoLoss.forward`."""
    x = F.normalize(student_output, eps=eps, p=2, dim=-1)
    dots = torch.mm(x, x.t())
    dots.view(-1)[:: x.shape[0] + 1].fill_(-1)  # the diagonal
    nearest = torch.max(dots, dim=1)[1]
    distances = F.pairwise_distance(x, x[nearest], p=2, eps=eps)
    return -torch.log(distances + eps).mean()


def collate_masks(masks, upperbound=None):
    """collate_data_and_cast's mask fields from `(B, N)` bool masks: `mask_indices_list`,
    `masks_weight`, `n_masked_patches`, `upperbound` (the collate's bound; default the count)."""
    indices = masks.flatten().nonzero().flatten()
    weight = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    n = indices.shape[0]
    return {"mask_indices_list": indices, "masks_weight": weight, "n_masked_patches": n, "upperbound": upperbound or n}


class DINOv2(nn.Module):
    """`SSLMetaArch.forward_backward` on one process, without the backward (two crops of `B`).

    `forward(global_crops, local_crops, masks, teacher_temp)`: `global_crops` `(2 B, C, H, W)`
    crop-major (collate's order), `local_crops` `(L B, ...)` or None, `masks` `(2 B, N)` bool.
    `centering`: `"sinkhorn_knopp"` or `"centering"` (the running centres `dino_center`,
    `ibot_center`, applied before and updated after, as `softmax_center_teacher` and
    `update_center`; the pending update applied at once, which the next step's loss would see
    anyway). `separate_head`: `ibot.separate_head`. `offset`: `interpolate_offset`.
    """

    def __init__(
        self,
        encoder,
        out_dim=65536,
        hidden_dim=2048,
        bottleneck_dim=256,
        nlayers=3,
        separate_head=False,
        patch_out_dim=65536,
        centering="sinkhorn_knopp",
        koleo_loss_weight=0.1,
        dino_loss_weight=1.0,
        ibot_loss_weight=1.0,
        student_temp=0.1,
        center_momentum=0.9,
        offset=0.1,
    ):
        super().__init__()
        head = {"hidden_dim": hidden_dim, "bottleneck_dim": bottleneck_dim, "nlayers": nlayers}
        self.student, self.dino_head = encoder, DINOHead(encoder.dim, out_dim, **head)
        self.ibot_head = DINOHead(encoder.dim, patch_out_dim, **head) if separate_head else None
        self.teacher = copy.deepcopy(encoder).requires_grad_(False)
        self.teacher_dino_head = copy.deepcopy(self.dino_head).requires_grad_(False)
        self.teacher_ibot_head = copy.deepcopy(self.ibot_head).requires_grad_(False) if separate_head else None
        self.mask_token = nn.Parameter(torch.zeros(1, encoder.dim))
        self.register_buffer("dino_center", torch.zeros(1, out_dim))
        self.register_buffer("ibot_center", torch.zeros(1, 1, patch_out_dim if separate_head else out_dim))
        self.centering, self.separate_head, self.offset = centering, separate_head, offset
        self.koleo_loss_weight, self.dino_loss_weight = koleo_loss_weight, dino_loss_weight
        self.ibot_loss_weight, self.student_temp, self.center_momentum = ibot_loss_weight, student_temp, center_momentum

    @torch.no_grad()
    def teacher_output(self, global_crops, collated, teacher_temp):
        indices, n_masked, upperbound = (collated[k] for k in ("mask_indices_list", "n_masked_patches", "upperbound"))
        x = tokens(self.teacher, global_crops, offset=self.offset)
        cls = x[:, 0].chunk(2)
        cls = torch.cat((cls[1], cls[0]))  # the official swap: crop A's student meets crop B's teacher
        patches, dim, n_cls = x[:, 1:], x.shape[-1], cls.shape[0]
        if not self.separate_head:
            buffer = patches.new_zeros(upperbound + n_cls, dim)
            buffer[:n_cls] = cls
            buffer[n_cls : n_cls + n_masked] = torch.index_select(patches.flatten(0, 1), 0, indices)
            after = self.teacher_dino_head(buffer)
            cls_after, patch_after = after[:n_cls], after[n_cls : n_cls + n_masked]
        else:
            buffer = patches.new_zeros(upperbound, dim)
            buffer[:n_masked] = torch.index_select(patches.flatten(0, 1), 0, indices)
            cls_after = self.teacher_dino_head(cls)
            patch_after = self.teacher_ibot_head(buffer)[:n_masked]
        if self.centering == "centering":
            cls_targets = F.softmax((cls_after - self.dino_center) / teacher_temp, dim=-1)
            patch_targets = F.softmax((patch_after.unsqueeze(0) - self.ibot_center) / teacher_temp, dim=-1)[0]
            m = self.center_momentum
            self.dino_center = self.dino_center * m + cls_after.mean(0, keepdim=True) * (1 - m)
            self.ibot_center = self.ibot_center * m + patch_after.mean(0).reshape(1, 1, -1) * (1 - m)
        elif self.centering == "sinkhorn_knopp":
            cls_targets = sinkhorn_knopp(cls_after, teacher_temp)
            patch_targets = sinkhorn_knopp(patch_after, teacher_temp, n_samples=n_masked)
        else:
            raise NotImplementedError(self.centering)
        return cls_targets.view(2, -1, cls_after.shape[-1]), patch_targets, cls_after, patch_after

    def forward(self, global_crops, local_crops, masks, teacher_temp, upperbound=None):
        masks = masks.bool()
        collated = collate_masks(masks, upperbound)
        indices, n_masked = collated["mask_indices_list"], collated["n_masked_patches"]
        n_local = 0 if local_crops is None else local_crops.shape[0] // (global_crops.shape[0] // 2)
        n_local_terms, n_global_terms = max(n_local * 2, 1), (2 - 1) * 2
        teacher_list, teacher_patch, teacher_cls_raw, teacher_patch_raw = self.teacher_output(
            global_crops, collated, teacher_temp
        )
        x = tokens(self.student, global_crops, masks, self.mask_token, offset=self.offset)
        global_cls, patches = x[:, 0], x[:, 1:]
        buffer = patches.new_zeros(collated["upperbound"], x.shape[-1])
        buffer[:n_masked] = torch.index_select(patches.flatten(0, 1), 0, indices)
        global_after = self.dino_head(global_cls)  # the block-diagonal head call is per token
        head = self.ibot_head if self.separate_head else self.dino_head
        patch_after = head(buffer)[:n_masked]
        out = {"loss": 0.0}
        if n_local:
            local_cls = tokens(self.student, local_crops, offset=self.offset)[:, 0]
            local_after = self.dino_head(local_cls)
            out["dino_local_crops_loss"] = dino_loss(local_after.chunk(n_local), teacher_list, self.student_temp) / (
                n_global_terms + n_local_terms
            )
            out["loss"] = out["loss"] + self.dino_loss_weight * out["dino_local_crops_loss"]
        loss_scales = 2
        out["dino_global_crops_loss"] = (
            dino_loss([global_after], [teacher_list.flatten(0, 1)], self.student_temp)
            * loss_scales
            / (n_global_terms + n_local_terms)
        )
        out["loss"] = out["loss"] + self.dino_loss_weight * out["dino_global_crops_loss"]
        out["koleo_loss"] = self.koleo_loss_weight * sum(koleo(p) for p in global_cls.chunk(2))
        out["loss"] = out["loss"] + out["koleo_loss"]
        t = torch.sum(teacher_patch * F.log_softmax(patch_after / self.student_temp, dim=-1), dim=-1)
        ibot = -(t * collated["masks_weight"]).sum() / masks.shape[0]  # forward_masked
        out["ibot_loss"] = ibot * loss_scales * (1.0 / 2)
        out["loss"] = out["loss"] + self.ibot_loss_weight * out["ibot_loss"]
        out.update(
            global_cls=global_cls,
            global_after=global_after,
            local_after=local_after if n_local else None,
            patch_after=patch_after,
            teacher_cls=teacher_cls_raw,
            teacher_patch=teacher_patch_raw,
            teacher_cls_targets=teacher_list,
            teacher_patch_targets=teacher_patch,
        )
        return out


# ------------------------------------------------------------------ keras_ssl's weights


def _numpy(x):
    import keras

    return keras.ops.convert_to_numpy(x)


@torch.no_grad()
def head_from_keras(head, keras_head, last_layer=None):
    """Copies a keras_ssl `DINOHead` (Dense kernels and biases, `last_v`, `last_g`) into a reference
    head's MLP and `last_layer` (or the given `WeightNormLinear`)."""
    if keras_head.use_bn:
        raise ValueError("the reference heads have no BatchNorm (the official ViT runs': norm None)")
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    if len(linears) != len(keras_head.mlp):
        raise ValueError(f"head depths differ: {len(keras_head.mlp)} keras Dense, {len(linears)} reference")
    for linear, dense in zip(linears, keras_head.mlp):
        linear.weight.copy_(_to_torch(_numpy(dense.kernel), "dense", linear.weight.shape))
        linear.bias.copy_(_to_torch(_numpy(dense.bias), None, linear.bias.shape))
    last = last_layer or head.last_layer
    last.weight_v.copy_(_to_torch(_numpy(keras_head.last_v), "dense", last.weight_v.shape))
    last.weight_g.copy_(_to_torch(_numpy(keras_head.last_g), None, last.weight_g.shape))


@torch.no_grad()
def ibot_from_keras(module, model):
    """Copies a keras_ssl `IBOT` (both encoders, both heads, mask token, both centres) into `IBOT`."""
    if not model.shared_head:
        raise ValueError("keras_ssl's shared_head=False is a second head (MLP included), not iBOT's last_layer2")
    from_keras(module.student, model.encoder)
    from_keras(module.teacher, model.teacher_encoder)
    head_from_keras(module.student_head, model.head)
    head_from_keras(module.teacher_head, model.teacher_head)
    module.masked_embed.copy_(torch.from_numpy(_numpy(model.mask_token)).reshape(1, -1))
    module.loss.center = torch.from_numpy(_numpy(model.center)).reshape(1, -1).clone()
    module.loss.center2 = torch.from_numpy(_numpy(model.patch_center)).reshape(1, 1, -1).clone()


@torch.no_grad()
def dinov2_from_keras(module, model):
    """Copies a keras_ssl `DINOv2` (both encoders, heads, mask token, centres) into `DINOv2`."""
    if module.separate_head == model.shared_head:
        raise ValueError("the reference's separate_head must be keras_ssl's `not shared_head`")
    from_keras(module.student, model.encoder)
    from_keras(module.teacher, model.teacher_encoder)
    head_from_keras(module.dino_head, model.head)
    head_from_keras(module.teacher_dino_head, model.teacher_head)
    if module.separate_head:
        head_from_keras(module.ibot_head, model.patch_head)
        head_from_keras(module.teacher_ibot_head, model.teacher_patch_head)
    module.mask_token.copy_(torch.from_numpy(_numpy(model.mask_token)).reshape(1, -1))
    module.dino_center = torch.from_numpy(_numpy(model.center)).reshape(1, -1).clone()
    module.ibot_center = torch.from_numpy(_numpy(model.patch_center)).reshape(1, 1, -1).clone()


def official_warmup(start, end, warmup, index):
    """The official teacher-temperature schedule's entry `index`: `np.linspace(start, end, warmup)`, then `end`."""
    return float(np.linspace(start, end, warmup)[index]) if index < warmup else float(end)
