"""Plain-PyTorch references for the rest of keras_ssl's image catalogue, for benchmarks/parity.py.

The same conventions as torch_methods.py (whose helpers they use): each written from the
paper's official code where there is one, never imported from keras_ssl, with heads in
keras_ssl's parameter layout so that both sides start from the same arrays.

- TiCo (Zhu et al. 2022; the authors released no code): the paper's eq. (4) and
  Algorithm 1, the batch covariance B under a stop-gradient as the paper's Figure 1
  (lightly's tico_loss.py after PR #1484), and the momentum branch of lightly's
  benchmarks/imagenet/resnet50/tico.py (EMA before the forward, lightly's cosine schedule).
- VIbCReg (ML4ITS/vibcreg): 3-layer projector ending in IterNorm (64 groups, T = 5),
  each view encoded and projected alone, `25 mse + 25 (FcE of each view, summed)
  + 200 (FD of each view)`, FD the mean of the squared off-diagonal correlations.
- FastSiam (Pototzky et al. 2022; no official code, lightly's examples/pytorch/fastsiam.py):
  SimSiam's heads, K views encoded one at a time, each prediction against the mean
  of the other views' stop-gradient projections.
- W-MSE (htdt/self-supervised methods/w_mse.py, whitening.py): 2-layer BN head over all
  views at once, each `w_size` sub-batch of each view whitened by Cholesky of its
  unbiased covariance, normalised MSE averaged over view pairs.
- NNCLR (Dwibedi et al. 2021; no official code): 3-layer projector, 2-layer predictor,
  a FIFO support set of view 1's projections, the nearest neighbour of each view's
  projection contrasted with the other view's prediction, both directions averaged
  (solo-learn's solo/methods/nnclr.py, VISSL's NNclrInfoNCECriterion).
- MoCo v3, ResNet (facebookresearch/moco-v3 moco/builder.py MoCo_ResNet): 2-layer
  projector ending in BatchNorm without affine, 2-layer predictor, momentum encoder
  updated before the keys with the cosine momentum, `ctr(q1, k2) + ctr(q2, k1)` each `* 2T`.
- ReSSL (KyleZheng1997/ReSSL network/ressl.py): Linear-ReLU-Linear projector, a momentum teacher
  on the weak view, a queue of its past embeddings, the student's relation distribution (T 0.1)
  against the teacher's (T 0.04), the queue read before the batch's keys enter it.
- MMCR (ThomasYerxa/mmcr cifar_stl/loss_mmcr.py): all views of all images through the network
  at once, `lmbda * mean per-image nuclear norm - nuclear norm of the centroids` on unit projections.
- NNBYOL, NNSiam (solo-learn solo/methods/nnbyol.py, nnsiam.py): BYOL's and SimSiam's losses with
  the target replaced by its nearest neighbour in a support set of view 1's unit projections.
- SimCLR with DCL / DCLW (raminnakhli/Decoupled-Contrastive-Learning loss/dcl.py): SimCLR's network,
  the positive pair out of the denominator, DCLW's von Mises weights (with gradient, as there).
- SupCon (HobbitLong/SupContrast losses.py, networks/resnet_big.py): Linear-ReLU-Linear head without
  BatchNorm, both views through the encoder at once, every same-label view a positive.
- DeepCluster v2 (facebookresearch/swav main_deepclusterv2.py, src/resnet50.py): SwAV's
  multi-crop network, frozen prototypes set to each epoch's spherical k-means centroids of a
  memory of the two global crops' unit projections (filled by a pass over the data before
  training, then by each step), the cross-entropy of every crop to its sample's clusters.
- MAE (facebookresearch/mae models_mae.py): torch_vit's ViT and MAE, a ViT-Tiny-like encoder
  sized by `--width` (parity.vit_sizes), models_mae's own initialisation (not `--init`).
- SimMIM (microsoft/SimMIM models/simmim.py, data/data_simmim.py): torch_vit's ViT with BEiT's
  shared relative position bias, LayerScale 0.1 and q/v attention biases, its SimMIM and
  MaskGenerator; stochastic depth off (as the harness's keras_ssl side), BEiT's initialisation.
- MSN (facebookresearch/msn src/msn_train.py, src/deit.py, src/data_manager.py): torch_vit's MSN on
  a learned-position ViT (deit's initialisation), the target crop, the anchor crop with one
  `randperm` patch subset for the batch, 4 focal crops of 16 px; EMA of encoder and head after
  the step, linear 0.996 -> 1 over 1.25 x the run.
- I-JEPA (facebookresearch/ijepa src/train.py, src/masks/multiblock.py): torch_vit_ijepa's IJEPA
  and MaskCollator (min_keep scaled to the 8 x 8 grid), one crop (0.3, 1) without flip, the
  target encoder's EMA after the step, linear 0.996 -> 1 over the run.
- iBOT (bytedance/ibot main_ibot.py, loader.py ImageFolderMask) and DINOv2 (facebookresearch/dinov2
  train/ssl_meta_arch.py, data/collate.py, data/masking.py): torch_vit_ibot's IBOT and DINOv2 on a
  learned-position ViT (the official inits), 2 global crops of 32 px and 4 local crops of 16 px at the
  papers' scales, each global crop's block mask drawn by the official sampler (`draw_masks`), the
  last layer frozen for the first epoch, the teacher temperature warmed up over it (np.linspace, per
  step), the teacher's EMA after the step (cosine to 1). Local crops' positions resized with the
  official 0.1 offset (`offset`; 0 is keras_ssl's resize, parity_step0's `--align`).
"""

import functools
import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_methods import BYOL_JITTER, Augment, Method, _copy_target, byol_pair, mlp, simclr_jitter


def lightly_cosine_schedule(step, max_steps, start_value, end_value):
    """lightly.utils.scheduler.cosine_schedule (no period): a half cosine over `max_steps - 1` steps."""
    if max_steps <= 1 or step >= max_steps - 1:
        return end_value
    return end_value - (end_value - start_value) * (math.cos(math.pi * step / (max_steps - 1)) + 1) / 2


class TiCo(Method):
    """TiCo from the paper (eq. 4, Algorithm 1, Fig. 1) and lightly's benchmarks/imagenet/resnet50/tico.py.

    No official code exists; lightly/loss/tico_loss.py (after PR #1484, which detached B after the
    paper's figure) is the implementation of the paper's loss this follows, and lightly's
    TiCoProjectionHead (Linear-BN-ReLU-Linear, 4096 -> 256 in the paper) the projector.
    """

    keras_heads = {"projector": "projector"}

    def __init__(self, width, projection_dim=256, hidden_dim=None, beta=0.9, rho=8.0, momentum=0.99, momentum_end=1.0):
        super().__init__(width)
        self.projector = mlp(self.dim, hidden_dim or min(4096, 4 * self.dim), projection_dim)
        self.beta, self.rho = beta, rho
        self.tau0, self.tau1 = momentum, momentum_end
        # Algorithm 1 starts C at zeros; lightly's TiCoLoss too (on its first call).
        self.register_buffer("C", torch.zeros(projection_dim, projection_dim))
        self.augment = byol_pair()

    def make_targets(self):
        self.target_encoder, self.target_projector = _copy_target(self.encoder), _copy_target(self.projector)

    def before_step(self, step):
        # lightly's training_step moves the momentum network first, then runs the forward; at step 0 the
        # copies are equal and the update is a no-op.
        tau = lightly_cosine_schedule(step, self.total_steps, self.tau0, self.tau1)
        self.ema(self.encoder, self.target_encoder, tau)
        self.ema(self.projector, self.target_projector, tau)

    def loss(self, views, step):
        (h1,) = self.encode(views[:1])
        z1 = F.normalize(self.projector(h1), dim=1)
        with torch.no_grad():
            (h2,) = self.encode(views[1:], self.target_encoder)
            z2 = F.normalize(self.target_projector(h2), dim=1)
        # The paper's Fig. 1 stops the gradient at B: the contrast acts on z1 only through z1 C z1^T.
        b = (z1.T @ z1).detach() / z1.shape[0]
        c = self.beta * self.C + (1 - self.beta) * b
        # Eq. (4) has the constant 1 (Algorithm 1 leaves it out); it changes no gradient.
        loss = 1 - (z1 * z2).sum(dim=1).mean() + self.rho * ((z1 @ c) * z1).sum(dim=1).mean()
        self.C = c.detach()  # Algorithm 1: the C this loss read is the running covariance from now on
        return loss


class IterNorm(nn.Module):
    """ML4ITS/vibcreg vibcreg/normalization/iter_norm.py IterNorm (dim=2, affine), training forward.

    The official autograd.Function hand-codes the backward of the same Newton iterations; it equals
    autograd's gradient of this forward (checked to 1e-15 in float64), so autograd is used here.
    The affine weight and bias are 1-d, not the official (1, D): the same function, and Keras's IterNorm
    has (D,) gamma and beta, so parity's vector/matrix split of the parameters matches.
    """

    def __init__(self, num_features, num_groups=64, T=5, eps=1e-5, momentum=0.1):
        super().__init__()
        channels = (num_features - 1) // num_groups + 1
        while num_features % channels:
            channels //= 2
        self.groups, self.channels = num_features // channels, channels
        self.T, self.eps, self.momentum = T, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(self.groups, channels, 1))
        self.register_buffer("running_wm", torch.eye(channels).expand(self.groups, channels, channels).clone())

    def forward(self, x):
        b = x.shape[0]
        # (B, D) -> (G, C, B): feature f is channel f % C of group f // C, as X.transpose(0, 1).view(g, nc, -1).
        x = x.T.reshape(self.groups, self.channels, b)
        if self.training:
            mean = x.mean(-1, keepdim=True)
            xc = x - mean
            eye = torch.eye(self.channels, dtype=x.dtype).expand(self.groups, self.channels, self.channels)
            sigma = torch.baddbmm(eye, xc, xc.transpose(1, 2), beta=self.eps, alpha=1.0 / b)
            r_tr = (sigma * eye).sum((1, 2), keepdim=True).reciprocal()
            sigma_n = sigma * r_tr
            p = eye
            for _ in range(self.T):
                p = torch.baddbmm(p, torch.matrix_power(p, 3), sigma_n, beta=1.5, alpha=-0.5)
            wm = p * r_tr.sqrt()
            with torch.no_grad():
                self.running_mean.copy_(self.momentum * mean + (1 - self.momentum) * self.running_mean)
                self.running_wm.copy_(self.momentum * wm + (1 - self.momentum) * self.running_wm)
        else:
            xc, wm = x - self.running_mean, self.running_wm
        out = (wm @ xc).reshape(self.groups * self.channels, b).T
        return out * self.weight + self.bias


class VIbCReg(Method):
    """VIbCReg, following ML4ITS/vibcreg: vibcreg/frameworks/vibcreg_.py (Projector, VIbCReg.forward,
    Utility_VIbCReg.representation_learning), vibcreg/losses/{invariance,variance,covariance}_loss.py
    (mse, vibcreg_var_loss, vibcreg_cov_loss), vibcreg/normalization/iter_norm.py and
    configs/frameworks/config_vibcreg.yaml (25 / 25 / 200, IterNorm at the end of the projector).

    The official Projector is Linear-BN-ReLU-Linear-BN-ReLU-Linear-IterNorm; the hidden Linears' biases
    (cancelled by their BN) are left out, as keras_ssl's layout. The IterNorm is its own module here
    because keras_ssl holds it outside the projector (`VIbCReg.whitening`). The paper trains on time
    series; the views are keras_ssl's default (BYOL's, as its VICReg).
    """

    keras_heads = {"projector": "projector", "whitening": "whitening"}

    def __init__(
        self,
        width,
        projection_dim=None,
        sim_coeff=25.0,
        std_coeff=25.0,
        cov_coeff=200.0,
        eps=1e-4,
        iternorm_groups=64,
        iternorm_iterations=5,
    ):
        super().__init__(width)
        p = projection_dim or min(2048, 8 * self.dim)
        self.projector = mlp(self.dim, p, p, layers=3)
        self.whitening = IterNorm(p, num_groups=iternorm_groups, T=iternorm_iterations)
        self.coeffs, self.eps = (sim_coeff, std_coeff, cov_coeff), eps
        self.augment = byol_pair()

    def loss(self, views, step):
        # VIbCReg.forward: encoder(x1), encoder(x2), then the projector (its IterNorm too) on each view alone.
        z1, z2 = (self.whitening(self.projector(h)) for h in self.encode(views))
        sim = F.mse_loss(z1, z2)
        std = lambda z: torch.sqrt(z.var(dim=0) + self.eps)
        # FcE: the two views' hinges summed, not averaged as VICReg's.
        var = torch.mean(F.relu(1.0 - std(z1))) + torch.mean(F.relu(1.0 - std(z2)))

        def fd(z):
            zn = F.normalize(z - z.mean(dim=0), p=2, dim=0)
            corr = zn.T @ zn
            corr = corr.fill_diagonal_(0.0)
            return (corr**2).mean()  # over all D^2 entries, the zeroed diagonal included

        cov = fd(z1) + fd(z2)
        lam, mu, nu = self.coeffs
        return lam * sim + mu * var + nu * cov


class FastSiam(Method):
    """FastSiam, from the paper (the target: the mean of the other views' projections) and
    lightly's examples/pytorch/fastsiam.py (its loss loop, line for line in meaning).

    The heads are SimSiam's (facebookresearch/simsiam builder.py), which FastSiam
    keeps unchanged; so are the views (SimSiam's CIFAR augmentations), K of them.
    """

    keras_heads = {"projector": "projector", "predictor": "predictor"}

    def __init__(self, width, num_views=4, projection_dim=None, prediction_dim=None):
        super().__init__(width)
        p = projection_dim or min(2048, 4 * self.dim)
        self.projector = mlp(self.dim, p, p, layers=3, out_bn=True)
        self.predictor = mlp(p, prediction_dim or max(1, p // 4), p)
        self.num_views = num_views
        self.augment = Augment(32, (0.2, 1.0), simclr_jitter(0.5))

    def loss(self, views, step):
        # lightly's example runs the backbone on each view alone, as SimSiam's builder.py.
        z = [self.projector(h) for h in self.encode(views)]
        p = [self.predictor(zk) for zk in z]
        targets = torch.stack([zk.detach() for zk in z])  # the stop-gradient is on every target view
        total = targets.sum(0)
        k = len(views)
        loss = 0.0
        for i in range(k):
            # The mean of the K - 1 other views: the whole sum less view i's own projection.
            target = (total - targets[i]) / (k - 1)
            loss = loss - F.cosine_similarity(p[i], target, dim=-1).mean() / k
        return loss


def whitening2d(x, eps=0.0):
    """htdt/self-supervised methods/whitening.py Whitening2d.forward (training, track_running_stats=False)."""
    xn = x - x.mean(0, keepdim=True)
    cov = xn.T @ xn / (x.shape[0] - 1)  # unbiased, as T @ T^T / (N - 1) there
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    shrunk = (1 - eps) * cov + eps * eye
    inv_sqrt = torch.linalg.solve_triangular(torch.linalg.cholesky(shrunk), eye, upper=False)
    # conv2d(xn, inv_sqrt as (out, in, 1, 1)) is xn @ inv_sqrt^T on (N, D) rows.
    return xn @ inv_sqrt.T


class WMSE(Method):
    """W-MSE, following htdt/self-supervised methods/w_mse.py (WMSE.forward), methods/whitening.py
    (Whitening2d), methods/norm_mse.py (norm_mse_loss), model.py (get_head) and cfg.py (defaults).

    get_head with head_layers=2, head_size=1024, add_bn=True is Linear-BN-ReLU-Linear; its first
    Linear's bias (cancelled by the BN) is left out, as keras_ssl's layout.
    """

    keras_heads = {"projector": "projector"}

    def __init__(self, width, num_views=2, projection_dim=64, hidden_dim=1024, w_size=128, w_iter=1, eps=0.0):
        super().__init__(width)
        self.projector = mlp(self.dim, hidden_dim, projection_dim)
        self.num_views, self.w_size, self.w_iter, self.eps = num_views, w_size, w_iter, eps
        # cfg.py's CIFAR defaults: ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.1, crop (0.2, 1).
        self.augment = Augment(32, (0.2, 1.0), simclr_jitter(0.5), p_jitter=0.8, p_gray=0.1)

    def loss(self, views, step):
        bs = views[0].shape[0]
        # The encoder per view, the head once over all views (its BN statistics span them).
        h = self.projector(torch.cat(self.encode(views)))
        return self.whitened_loss(h, bs)

    def whitened_loss(self, h, bs):
        """WMSE.forward after the head: `h` is the (K * bs, D) projections, views stacked."""
        k = h.shape[0] // bs
        loss = 0.0
        for _ in range(self.w_iter):
            z = torch.empty_like(h)
            perm = torch.randperm(bs).view(-1, self.w_size)
            for idx in perm:
                for i in range(k):  # each view's sub-batch whitened on its own, the same rows for every view
                    z[idx + i * bs] = whitening2d(h[idx + i * bs], self.eps)
            for i in range(k - 1):
                for j in range(i + 1, k):
                    x0 = F.normalize(z[i * bs : (i + 1) * bs])
                    x1 = F.normalize(z[j * bs : (j + 1) * bs])
                    loss = loss + 2 - 2 * (x0 * x1).sum(dim=-1).mean()
        return loss / (self.w_iter * k * (k - 1) // 2)


class _SupportSet:
    """A FIFO support set of unit rows: solo-learn's queue (nnbyol.py / nnsiam.py `__init__`, `find_nn`,
    `dequeue_and_enqueue`), which NNCLR's Sec. 3.2 describes too."""

    def make_queue(self, queue_size, dim):
        # `torch.randn(queue_size, proj_output_dim)` then `F.normalize(self.queue, dim=1)`: random unit rows.
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.ptr = 0

    @torch.no_grad()
    def find_nn(self, z):
        """`idx = (z @ self.queue.T).max(dim=1)[1]`: `z` arrives L2-normalised, so this is the cosine argmax."""
        return self.queue[(z @ self.queue.T).max(dim=1)[1]]

    @torch.no_grad()
    def enqueue(self, z):
        """FIFO: the batch replaces the oldest rows. solo-learn asserts `queue_size % batch_size == 0` and
        writes `queue[ptr:ptr + B]`; the modular index is the same write when that holds."""
        b = z.shape[0]
        idx = (self.ptr + torch.arange(b)) % self.queue.shape[0]
        self.queue[idx] = z  # already normalised by the caller, as solo-learn's (it does not normalise here)
        self.ptr = (self.ptr + b) % self.queue.shape[0]


class NNCLR(_SupportSet, Method):
    """NNCLR, from the paper (Dwibedi et al. 2021, arXiv:2104.14548v2); no official code exists.

    - Heads (the paper's implementation details, quoted in lightly's
      lightly/models/modules/heads.py NNCLRProjectionHead/NNCLRPredictionHead
      docstrings): projection MLP of 3 layers [2048, 2048, d], "all
      fully-connected layers are followed by batch-normalization", ReLU after
      all but the last; prediction MLP [4096, d], BatchNorm + ReLU after the
      hidden layer, "the last layer has no batch-norm or activation". Here the widths are
      keras_ssl's: `hidden_dim` for both heads (the paper's predictor is twice the
      projector's width). The output BatchNorm has no affine
      parameters (the paper does not say; keras_ssl's layout, so the
      trainable weights match; solo-learn and lightly keep them affine).
    - Support set (Sec. 3.2): a FIFO queue initialised as a random matrix,
      the NN looked up (eq. 4, L2-normalised, argmin of the L2 distance =
      argmax of the cosine) before the step's batch enters it; only view 1's
      embeddings are added, after the loss.
    - Loss, the public implementations' (solo-learn solo/methods/nnclr.py training_step and
      solo/losses/nnclr.py; VISSL NNclrInfoNCECriterion): the mean of `CE(NN(z1) p2^T / T)`
      and `CE(NN(z2) p1^T / T)`, rows only, NN() without gradient. (The paper's Sec. 3.2 may
      sum eq. 3 with its transposed term instead; its text was not available here.)
    - Views: BYOL's (the paper: "the same augmentations as BYOL"), blur dropped
      at 32 px as keras_ssl's byol_views.
    - The encoder runs on both views in one call, as keras_ssl's NNCLR: with no official code to
      say which, keras_ssl's choice is kept on both sides so that the comparison is about the rest
      (solo-learn and lightly run each view alone; that gave 2.924 against 2.883 at step 0 on
      batch 16).
    """

    keras_heads = {"projector": "projector", "predictor": "predictor"}

    def __init__(
        self,
        width,
        temperature=0.1,
        queue_size=4096,
        projection_dim=256,
        hidden_dim=None,
    ):
        super().__init__(width)
        hidden = hidden_dim or min(2048, 4 * self.dim)
        # Linear-BN-ReLU, Linear-BN-ReLU, Linear-BN: a bias before each BN would be cancelled.
        self.projector = mlp(self.dim, hidden, projection_dim, layers=3, out_bn=True)
        # Linear-BN-ReLU, Linear (with its bias): "the last layer has no batch-norm or activation".
        self.predictor = mlp(projection_dim, hidden, projection_dim)
        self.t = temperature
        # "initialized as a random matrix": unit rows, as the NN lookup normalises (eq. 4).
        self.make_queue(queue_size, projection_dim)
        self.augment = byol_pair()

    def nearest(self, z):
        """NN(z, Q): the support row closest (cosine) to each row of `z`, no gradient."""
        return self.find_nn(F.normalize(z, dim=1))

    def contrast(self, nn_, p):
        """The logits `NN(z_i) · p+_k / T` (both L2-normalised, as SimCLR's eq. 1 which eq. 3 follows)."""
        return nn_ @ F.normalize(p, dim=1).T / self.t

    def loss(self, views, step):
        z1, z2 = (self.projector(h) for h in self.encode_groups(views))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        labels = torch.arange(z1.shape[0])
        ce = lambda z, p: F.cross_entropy(self.contrast(self.nearest(z), p), labels)
        loss = (ce(z1, p2) + ce(z2, p1)) / 2
        self.enqueue(F.normalize(z1.detach(), dim=1))  # Sec. 3.2: view 1's embeddings replace the oldest rows
        return loss


class MoCoV3(Method):
    """MoCo v3 with a ResNet, from facebookresearch/moco-v3 at c349e6e (moco/builder.py, main_moco.py).

    - Heads: `MoCo._build_mlp` (builder.py L36-52): bias-free Linear layers,
      BN + ReLU after each hidden one, BatchNorm1d(affine=False) after the last
      when `last_bn`. `MoCo_ResNet` (L99-109): projector `_build_mlp(2, D,
      mlp_dim, dim)` (last BN), predictor `_build_mlp(2, dim, mlp_dim, dim,
      False)` (no last BN). Widths keras_ssl's: `hidden_dim` (default D) for
      both (official `--moco-mlp-dim` 4096), `projection_dim` 256 (`--moco-dim`).
    - Step (builder.py L75-96): queries `predictor(base_encoder(x))` per view;
      then, without gradient, the momentum update of the whole base encoder
      (backbone + projector; parameters only, L57-61) and the keys
      `momentum_encoder(x1)`, `momentum_encoder(x2)`, BatchNorm in train mode.
    - Loss (L63-73, L96): `contrastive_loss(q1, k2) + contrastive_loss(q2, k1)`,
      each `CE(normalize(q) normalize(k)^T / T, arange) * 2T`; T = 1.0 (`--moco-t`).
    - Momentum (main_moco.py L336-345, L431-434): `--moco-m 0.99` with
      `--moco-m-cos` (the README's ResNet-50 command): `1 - (1 - m) (1 + cos(pi k / K)) / 2`
      at step k, computed before the step's forward.
    - Views (main_moco.py L262-287): BYOL's asymmetric pair, crop scale
      `(crop_min, 1)`: the default 0.08 here, as keras_ssl's (the README's
      ResNet-50 command passes `--crop-min=.2`); blur dropped at 32 px.
    - Not reproduced: `zero_init_residual=True` (main_moco.py L186): the
      encoder keeps `initialise`'s draw, as the other references; the same
      arrays go to keras_ssl.
    """

    keras_heads = {"projector": "projector", "predictor": "predictor"}

    def __init__(self, width, temperature=1.0, projection_dim=256, hidden_dim=None, momentum=0.99, momentum_end=1.0):
        super().__init__(width)
        hidden = hidden_dim or self.dim
        self.projector = mlp(self.dim, hidden, projection_dim, layers=2, out_bn=True)  # last_bn=True: no last bias
        self.predictor = mlp(projection_dim, hidden, projection_dim, last_bias=False)  # last_bn=False, bias=False
        self.t, self.tau0, self.tau1 = temperature, momentum, momentum_end
        self.augment = byol_pair()

    def make_targets(self):
        # builder.py L32-34: the momentum encoder starts as a copy, without gradient.
        self.key_encoder, self.key_projector = _copy_target(self.encoder), _copy_target(self.projector)

    def ctr(self, q, k):
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / self.t
        return F.cross_entropy(logits, torch.arange(q.shape[0])) * (2 * self.t)

    def loss(self, views, step):
        x1, x2 = views
        # Each view through the encoder alone (builder.py L86-87), whatever `joint_views` says:
        # keras_ssl's MoCoV3 also encodes its views one at a time.
        q1, q2 = (self.predictor(self.projector(self.encoder(x))) for x in (x1, x2))
        with torch.no_grad():
            tau = self.momentum_at(step, self.tau0, self.tau1)
            self.ema(self.encoder, self.key_encoder, tau)  # before the keys (L90)
            self.ema(self.projector, self.key_projector, tau)
            k1, k2 = (self.key_projector(self.key_encoder(x)) for x in (x1, x2))
        return self.ctr(q1, k2) + self.ctr(q2, k1)


class ReSSL(Method):
    """ReSSL, following KyleZheng1997/ReSSL (the ImageNet code; the CIFAR code is only on Google Drive).

    - Projector (network/head.py L24-36 ProjectionHead, network/backbone.py L19-29 BackBone):
      `Linear(D, hidden) - ReLU - Linear(hidden, dim)`, both with biases, no BatchNorm, output
      `F.normalize`d. Widths keras_ssl's (the paper's CIFAR settings: hidden = D = 512, dim 128;
      the ImageNet code: 4096 and 512).
    - Teacher (network/ressl.py L24-29, L37-43, L117-126): `encoder_k` a copy of `encoder_q`
      (backbone + head), updated before the keys by `k = m k + (1 - m) q` over the parameters only,
      m constant (the ImageNet code 0.999; the paper's CIFAR 0.99); it runs in train mode
      (ressl.py L52, L137: `model.train()` on the whole module) on the weak view.
    - Shuffle-BN (network/ressl.py L61-106): a permutation of the keys across the GPUs; in one
      process (one "GPU") it permutes and un-permutes one batch, which BatchNorm's batch statistics
      do not see, so it is the identity here (as keras_ssl, which does not simulate it either).
    - Queue (L31-35, L45-59): `randn(dim, K)`, columns L2-normalised; the batch's normalised keys
      overwrite columns `ptr:ptr + B` (`assert K % B == 0`) after the logits are taken
      (L128-132: `self.queue.clone().detach()`), so the batch's own keys are not in the softmax.
    - Loss (ressl.py L67-68): `-sum(softmax(logitsk / t) * log_softmax(logitsq / 0.1), 1).mean()`,
      t = `--t 0.04`; one direction only.
    - Multi-crop (network/ressl_multi.py L118-131, ressl_multi.py L66): `im_q` a list of strong
      crops, each through `encoder_q` alone, logits concatenated; the teacher's logits repeated once
      per crop. With one strong view (the default here) this is ressl.py.
    - Views (data/augmentation.py L27-44; the ImageNet `[moco_aug, target_aug]` at 224 px, here
      32 px without blur, as keras_ssl's CIFAR recipe): the weak view `target_aug`, a
      RandomResizedCrop (0.2, 1) + flip; the strong `moco_aug`, the same crop, ColorJitter
      (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2 (blur p 0.5 dropped at 32 px). keras_ssl's view
      order: the weak (teacher) view first, then the strong one(s).
    """

    keras_heads = {"projector": "projector"}

    def __init__(
        self,
        width,
        student_temperature=0.1,
        teacher_temperature=0.04,
        queue_size=4096,
        projection_dim=128,
        hidden_dim=None,
        momentum=0.99,
    ):
        super().__init__(width)
        # Linear-ReLU-Linear with biases (head.py), no BatchNorm: keras_ssl's ProjectionHead(batch_norm=False).
        self.projector = mlp(self.dim, hidden_dim or self.dim, projection_dim, bn=False)
        self.st, self.tt, self.m = student_temperature, teacher_temperature, momentum
        # network/ressl.py L32-33: (dim, K) with unit columns (keras_ssl's MemoryBank holds unit rows).
        self.register_buffer("queue", F.normalize(torch.randn(projection_dim, queue_size), dim=0))
        self.ptr = 0
        weak = Augment(32, (0.2, 1.0), None, p_jitter=0.0, p_gray=0.0)  # target_aug: crop + flip only
        strong = Augment(32, (0.2, 1.0), simclr_jitter(0.5), p_jitter=0.8, p_gray=0.2)  # moco_aug
        self.augment = [weak, strong]

    def make_targets(self):
        # ressl.py L27-29: encoder_k := encoder_q (backbone and head), no gradient.
        self.target_encoder, self.target_projector = _copy_target(self.encoder), _copy_target(self.projector)

    def embed(self, x, encoder, projector):
        return F.normalize(projector(encoder(x)), dim=1)  # backbone.py L29: F.normalize(embedding)

    def loss(self, views, step):
        weak, strong = views[0], views[1:]
        # ressl_multi.py L118-119: each strong crop through the student alone, whatever `joint_views` says.
        q = torch.cat([self.embed(x, self.encoder, self.projector) for x in strong])
        with torch.no_grad():
            # L121: the momentum update before the keys (at step 0 the copies are equal: a no-op).
            self.ema(self.encoder, self.target_encoder, self.m)
            self.ema(self.projector, self.target_projector, self.m)
            k = self.embed(weak, self.target_encoder, self.target_projector)
        queue = self.queue.clone().detach()  # L128-129: the queue before this batch's keys
        logits_q = q @ queue
        logits_k = (k @ queue).repeat(len(strong), 1)  # ressl_multi.py L131
        self.enqueue(k)  # L132: after the logits
        # ressl.py L68: the teacher's sharpened distribution is the target of the student's.
        target = F.softmax(logits_k.detach() / self.tt, dim=1)
        return -torch.sum(target * F.log_softmax(logits_q / self.st, dim=1), dim=1).mean()

    @torch.no_grad()
    def enqueue(self, keys):
        """network/ressl.py L45-59 `_dequeue_and_enqueue` (one process: no all-gather)."""
        b, size = keys.shape[0], self.queue.shape[1]
        assert size % b == 0  # "for simplicity", as the official code
        self.queue[:, self.ptr : self.ptr + b] = keys.T
        self.ptr = (self.ptr + b) % size


class MMCR(Method):
    """MMCR, following ThomasYerxa/mmcr (CIFAR/STL code; the momentum branch from its ImageNet code).

    - Projector (mmcr/cifar_stl/models.py L30-40, `projector_dims=[512, 128]` in train.py L24):
      `Linear(D, 512, bias=False) - BatchNorm1d - ReLU - Linear(512, 128, bias=False)`
      (the ImageNet models.py L30-40: the same with [8192, 8192, 512]).
    - Forward (cifar_stl/train.py L47-50): the batch `(B, N, C, H, W)` rearranged to `(B N)` rows,
      image-major, through the encoder and projector in one call (BatchNorm spans every view of every
      image), then the loss.
    - Loss (cifar_stl/loss_mmcr.py L19-46): `z = F.normalize(z)`, `(B N) C -> B C N`, centroids the
      mean over the N views, `local_nuc = svdvals(z_local).sum()` (only when lmbda != 0),
      `global_nuc = svdvals(centroids).sum()`, `loss = lmbda * local_nuc / B - global_nuc`.
    - Momentum (imagenet/models.py L18-77 MomentumModel, imagenet/loss_mmcr_momentum.py L21-71,
      imagenet/misc.py L7-34 MomentumUpdate, pretrain_imagenet.py `--tau 0.99`): when `momentum` is
      given, a frozen copy of encoder + projector embeds the same `(B N)` batch (train mode); the
      centroid is `(mean z + mean z_m) / 2`, rows with non-finite entries dropped; local_nuc stays the
      online views'; the copy moves by `m = tau m + (1 - tau) o` (parameters only) at the end of each
      batch, after the optimizer step (`after_step`), tau constant.
    - Views (cifar_stl/data.py L167-212 CifarBatchTransform): N draws of RandomResizedCrop(32)
      (scale (0.08, 1)), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2.
      `num_views` keras_ssl's default 8 (official CIFAR: `--n_aug 40`, batch 32).
    """

    keras_heads = {"projector": "projector"}

    def __init__(self, width, num_views=8, projection_dim=128, hidden_dim=512, lmbda=0.0, momentum=None):
        super().__init__(width)
        # Linear(no bias)-BN-ReLU-Linear(no bias): keras_ssl's ProjectionHead(output_bias=False).
        self.projector = mlp(self.dim, hidden_dim, projection_dim, last_bias=False)
        self.num_views, self.lmbda, self.tau = num_views, lmbda, momentum
        self.augment = Augment(32, (0.08, 1.0), simclr_jitter(0.5), p_jitter=0.8, p_gray=0.2)

    def make_targets(self):
        if self.tau is not None:  # models.py L57-66: the momentum copies start equal, frozen
            self.momentum_encoder, self.momentum_projector = _copy_target(self.encoder), _copy_target(self.projector)

    def project(self, views, encoder, projector):
        """train.py L48-49: `B N C H W -> (B N) C H W`, one call; returns the `(B, C, N)` normalised projections."""
        b, n = views[0].shape[0], len(views)
        z = projector(encoder(torch.stack(views, 1).flatten(0, 1)))
        z = F.normalize(z, dim=-1)  # loss_mmcr.py L20
        return z.reshape(b, n, -1).transpose(1, 2)  # L21: "(B N) C -> B C N"

    def loss(self, views, step):
        z_local = self.project(views, self.encoder, self.projector)
        centroids = z_local.mean(-1)
        if self.tau is not None:
            with torch.no_grad():  # the frozen copy: no parameter takes a gradient through it
                z_m = self.project(views, self.momentum_encoder, self.momentum_projector)
            centroids = (centroids + z_m.mean(-1)) * 0.5  # loss_mmcr_momentum.py L59
            centroids = centroids[centroids.isfinite().all(dim=1)]  # L61-63: non-finite rows dropped
        local_nuc = torch.linalg.svdvals(z_local).sum() if self.lmbda != 0.0 else 0.0
        global_nuc = torch.linalg.svdvals(centroids).sum()
        return self.lmbda * local_nuc / z_local.shape[0] - global_nuc

    def after_step(self, step):
        if self.tau is not None:  # misc.py MomentumUpdate.batch_end: after the optimizer step, constant tau
            self.ema(self.encoder, self.momentum_encoder, self.tau)
            self.ema(self.projector, self.momentum_projector, self.tau)


class NNBYOL(_SupportSet, Method):
    """NNBYOL after solo-learn solo/methods/nnbyol.py (`__init__`, `momentum_forward`, `training_step`).

    Heads: solo-learn's projector and predictor are Linear-BN-ReLU-Linear (the first Linear's bias,
    cancelled by the BN, is left out as in keras_ssl's layout). solo-learn has a separate
    `pred_hidden_dim` (its CIFAR config: 4096, as proj_hidden_dim); keras_ssl's NNBYOL, as its BYOL,
    uses `hidden_dim` for both, which is what parity passes here.
    Views: solo-learn's scripts/pretrain/cifar/augmentations/asymmetric.yaml is BYOL's pair at 32 px
    (solarisation 0.2 on the second view only, no blur): `byol_pair()`.
    Momentum: solo-learn's BaseMomentumMethod updates the momentum pairs after the optimizer step
    (`on_train_batch_end`) with `final - (final - base) (cos(pi k / K) + 1) / 2`, as torch_methods.BYOL.
    """

    keras_heads = {"projector": "projector", "predictor": "predictor"}

    def __init__(self, width, queue_size=65536, projection_dim=256, hidden_dim=None, momentum=0.996, momentum_end=1.0):
        super().__init__(width)
        hidden = hidden_dim or min(4096, 4 * self.dim)
        self.projector = mlp(self.dim, hidden, projection_dim)
        self.predictor = mlp(projection_dim, hidden, projection_dim)
        self.tau0, self.tau1 = momentum, momentum_end
        self.make_queue(queue_size, projection_dim)
        self.augment = byol_pair()

    def make_targets(self):
        self.target_encoder, self.target_projector = _copy_target(self.encoder), _copy_target(self.projector)

    def loss(self, views, step):
        # BaseMethod.training_step runs the backbone once per large crop (`for x in X[:num_large_crops]`).
        p1, p2 = (self.predictor(self.projector(h)) for h in self.encode(views))
        with torch.no_grad():
            # momentum_forward: `z = F.normalize(self.momentum_projector(out["feats"]), dim=-1)`.
            t1, t2 = (F.normalize(self.target_projector(h), dim=-1) for h in self.encode(views, self.target_encoder))
        # find_nn before dequeue_and_enqueue: both lookups read the support set as it was before the step.
        nn1, nn2 = self.find_nn(t1), self.find_nn(t2)
        byol = lambda p, z: 2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1).mean()  # solo byol_loss_func
        loss = byol(p1, nn2) + byol(p2, nn1)
        self.enqueue(t1)  # `self.dequeue_and_enqueue(z1_momentum, targets)`: view 1's, normalised
        return loss

    def after_step(self, step):
        tau = self.momentum_at(step, self.tau0, self.tau1)
        self.ema(self.encoder, self.target_encoder, tau)
        self.ema(self.projector, self.target_projector, tau)


class NNSiam(_SupportSet, Method):
    """NNSiam after solo-learn solo/methods/nnsiam.py (`__init__`, `forward`, `training_step`).

    Heads: solo-learn's projector is Linear(no bias)-BN-ReLU-Linear(no bias)-BN-ReLU-Linear-BN(affine=False)
    with the last Linear's bias frozen (`requires_grad = False`: cancelled by the BN), predictor
    Linear(no bias)-BN-ReLU-Linear: keras_ssl's SimSiam layout (`mlp(..., layers=3, out_bn=True)`).
    Widths keras_ssl's (SimSiam's `projection_dim`, `prediction_dim = projection_dim // 4`); solo-learn's
    CIFAR config has proj_hidden 2048, proj_output 2048 and pred_hidden 4096 (an expanding predictor).
    Views: solo-learn's asymmetric.yaml (BYOL's pair), as keras_ssl's NNSiam `view_recipe = byol_views`.
    """

    keras_heads = {"projector": "projector", "predictor": "predictor"}

    def __init__(self, width, queue_size=65536, projection_dim=None, prediction_dim=None):
        super().__init__(width)
        p = projection_dim or min(2048, 4 * self.dim)
        self.projector = mlp(self.dim, p, p, layers=3, out_bn=True)
        self.predictor = mlp(p, prediction_dim or max(1, p // 4), p)
        self.make_queue(queue_size, p)
        self.augment = byol_pair()

    def loss(self, views, step):
        out = []
        for h in self.encode(views):  # one backbone call per crop (BaseMethod.training_step)
            z = self.projector(h)
            # forward(): the predictor reads the unnormalised projection, then z is normalised.
            out.append((F.normalize(z, dim=-1), self.predictor(z)))
        (z1, p1), (z2, p2) = out
        nn1, nn2 = self.find_nn(z1), self.find_nn(z2)
        simsiam = lambda p, z: -F.cosine_similarity(p, z.detach(), dim=-1).mean()  # solo simsiam_loss_func
        loss = simsiam(p1, nn2) / 2 + simsiam(p2, nn1) / 2
        self.enqueue(z1.detach())  # `self.dequeue_and_enqueue(z1, targets)` (under no_grad there)
        return loss


SMALL_NUM = torch.log(torch.tensor(1e-45)).item()  # dcl.py L4: `np.log(1e-45)`


class SimCLRDCL(Method):
    """SimCLR trained with DCL / DCLW, the loss from raminnakhli/Decoupled-Contrastive-Learning.

    Heads and views: torch_methods.SimCLR's (google-research/simclr: 2-layer projector, bias-free last
    layer, BatchNorm on the output; both views through the encoder and the projector in one call),
    which is keras_ssl's `SimCLR(version=1)`. The official DCL experiment (experiment/simclr/model.py
    L20-21, main.py L26-27) differs there: it runs each view alone through the whole net and its
    projector is Linear(no bias)-BN-ReLU-Linear(bias) without an output BN; not reproduced here.

    Loss (loss/dcl.py `DCL.__call__`, L19-33, HEAD): for anchors z1 against z2, both L2-normalised by
    the model (model.py L27),
        positive_i = -w_i (z1 z2^T)_ii / T
        negative_i = logsumexp_j([z1 z1^T, z1 z2^T]_ij / T + [I, I]_ij log(1e-45))
        one_way    = mean_i(positive_i + negative_i)
    and the two directions averaged (`directions = "mean"`, keras_ssl's and lightly's reduction);
    the repository's main.py (L28-33) sums them, `l(out_1, out_2) + l(out_2, out_1)`
    (`directions = "sum"`).
    DCLW (dcl.py L36-44): `w = 2 - B softmax(z1.z2 / sigma)` over the batch (sigma 0.5), i.e. the
    paper's `2 - exp(s_i / sigma) / mean_j exp(s_j / sigma)`, with gradient (not detached; lightly's
    `negative_mises_fisher_weights` and keras_ssl detach). `detach_weights` switches that.
    """

    keras_heads = {"projector": "projector"}
    # keras_ssl, lightly and the SimCLR paper (its 1/2N) average the two directions; main.py sums them,
    # which with SGD is twice the rate: the parity runs compare at equal rates.
    directions = "mean"
    detach_weights = False  # dcl.py L43: the weight lambda keeps the graph

    def __init__(self, width, temperature=0.1, projection_dim=128, hidden_dim=None, sigma=0.5, weighting=None):
        super().__init__(width)
        if weighting not in (None, "von_mises"):
            raise ValueError(f"weighting must be None or 'von_mises', got {weighting!r}")
        self.projector = mlp(self.dim, hidden_dim or self.dim, projection_dim, out_bn=True)
        self.t, self.sigma, self.weighting = temperature, sigma, weighting
        # SimCLR's CIFAR views; the official DCL's utils.py train_transform is the same family
        # (RandomResizedCrop(32), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2).
        self.augment = Augment(32, (0.08, 1.0), simclr_jitter(0.5))

    def weight(self, z1, z2):
        """DCLW's lambda (dcl.py L43): `2 - z1.size(0) * softmax((z1 * z2).sum(dim=1) / sigma, dim=0)`."""
        w = 2 - z1.size(0) * F.softmax((z1 * z2).sum(dim=1) / self.sigma, dim=0).squeeze()
        return w.detach() if self.detach_weights else w

    def one_way(self, z1, z2):
        """dcl.py `DCL.__call__` (L19-33), line for line."""
        cross_view_distance = torch.mm(z1, z2.t())
        positive_loss = -torch.diag(cross_view_distance) / self.t
        if self.weighting is not None:
            positive_loss = positive_loss * self.weight(z1, z2)
        neg_similarity = torch.cat((torch.mm(z1, z1.t()), cross_view_distance), dim=1) / self.t
        neg_mask = torch.eye(z1.size(0), dtype=z1.dtype).repeat(1, 2)
        negative_loss = torch.logsumexp(neg_similarity + neg_mask * SMALL_NUM, dim=1, keepdim=False)
        return (positive_loss + negative_loss).mean()

    def loss(self, views, step):
        # torch_methods.SimCLR: the views concatenated through encoder and projector (SimCLR's TPU code).
        z = F.normalize(self.projector(torch.cat(self.encode_groups(views))), dim=1)  # model.py L27
        z1, z2 = z.chunk(2)
        total = self.one_way(z1, z2) + self.one_way(z2, z1)
        return total if self.directions == "sum" else total / 2


class SupCon(Method):
    """SupCon (HobbitLong/SupContrast: networks/resnet_big.py SupConResNet, losses.py SupConLoss, main_supcon.py).

    Head (`head='mlp'`): Linear(d, d)-ReLU-Linear(d, feat_dim), both with bias, no BatchNorm, its
    output L2-normalised (resnet_big.py). Both views through the encoder in one call
    (`torch.cat([images[0], images[1]])`, main_supcon.py `train`). Views: main_supcon.py's CIFAR
    transform, RandomResizedCrop(32, scale (0.2, 1)), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8,
    grayscale 0.2. Loss: SupConLoss with `contrast_mode='all'`, line for line, `base_temperature`
    equal to `temperature` (main_supcon.py builds `SupConLoss(temperature=opt.temp)`, whose base
    stays 0.07; here at the parity runs' temperature both are the same, so the factor is 1, as
    keras_ssl's default). The batch's labels arrive as `labels` (parity.py sets it each step).
    """

    keras_heads = {"projector": "projector"}
    needs_labels = True
    labels = None

    def __init__(self, width, temperature=0.1, projection_dim=128, hidden_dim=None):
        super().__init__(width)
        self.projector = mlp(self.dim, hidden_dim or self.dim, projection_dim, bn=False)
        self.t = self.base_t = temperature
        self.augment = Augment(32, (0.2, 1.0), simclr_jitter(0.5))

    def supcon_loss(self, features, labels):
        """losses.py SupConLoss.forward, contrast_mode 'all': `features` (bsz, n_views, dim), `labels` (bsz,)."""
        batch_size = features.shape[0]
        mask = torch.eq(labels.view(-1, 1), labels.view(-1, 1).T).to(features.dtype)
        contrast_count = features.shape[1]
        contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
        anchor_feature, anchor_count = contrast_feature, contrast_count
        anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, contrast_feature.T), self.t)
        logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
        logits = anchor_dot_contrast - logits_max.detach()
        mask = mask.repeat(anchor_count, contrast_count)
        logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(batch_size * anchor_count).view(-1, 1), 0)
        mask = mask * logits_mask
        exp_logits = torch.exp(logits) * logits_mask
        log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
        mask_pos_pairs = mask.sum(1)
        mask_pos_pairs = torch.where(mask_pos_pairs < 1e-6, 1, mask_pos_pairs)
        mean_log_prob_pos = (mask * log_prob).sum(1) / mask_pos_pairs
        loss = -(self.t / self.base_t) * mean_log_prob_pos
        return loss.view(anchor_count, batch_size).mean()

    def loss(self, views, step):
        if self.labels is None:
            raise ValueError("SupCon's reference needs the batch's labels: set `labels` before the step")
        z = F.normalize(self.projector(torch.cat(self.encode_groups(views))), dim=1)
        f1, f2 = z.chunk(2)
        return self.supcon_loss(torch.stack([f1, f2], dim=1), self.labels)


class DeepClusterV2(Method):
    """DeepCluster v2 (facebookresearch/swav: main_deepclusterv2.py `train`, `init_memory`,
    `cluster_memory`; src/resnet50.py's multi-crop forward and heads).

    - Network: the backbone once per run of same-size crops, the projection head
      Linear-BN-ReLU-Linear over all crops at once, its output L2-normalised, then one
      bias-free linear layer of prototypes per head (`nmb_prototypes`).
    - Prototypes: frozen (the scripts' `freeze_prototypes_niters` 300000 outlasts every run, so
      the optimizer never moves them) and overwritten at each epoch's start by that epoch's
      k-means centroids; held here as buffers, out of the optimizer, to the same effect.
    - Memory: `crops_for_assign` 0 and 1, each sample's last unit projection, by position in the
      epoch's order with the sample's index beside it (`local_memory_index`). Before training,
      `init_memory` fills it with a pass over the data, each assignment crop through the model
      alone in training mode; each step then writes its batch's detached projections.
    - Clustering (`cluster_memory`), at each epoch's start: per head, K random memory rows
      (`randperm`) as centroids, `nmb_kmeans_iters` rounds of assign-by-dot-product then mean of
      the members (a centroid without members keeps its place) and L2-normalise, then a last
      assignment; head h clusters assignment crop h mod 2's memory. Samples not in the memory
      keep the target -100, which the loss ignores.
    - Loss: per head `CrossEntropyLoss(ignore_index=-100)` of every crop's scores / T against the
      sample's cluster (`assignments[h][idx].repeat(n_crops)`), averaged over the heads.
    - Views: the SwAV reference's multi-crop at 32 px (2 x 32 px, scale (0.14, 1); `num_local` x
      16 px, (0.05, 0.14)); blur dropped at this size, as there.

    The batch's dataset indices arrive as `indices` (parity.torch_step sets them each step).
    """

    keras_heads = {"projector": "projector"}
    needs_indices = True
    indices = None

    def __init__(
        self,
        width,
        num_samples,
        num_prototypes=(3000, 3000, 3000),
        projection_dim=128,
        hidden_dim=None,
        temperature=0.1,
        kmeans_iterations=10,
        num_local=4,
    ):
        super().__init__(width)
        self.projector = mlp(self.dim, hidden_dim or min(2048, 4 * self.dim), projection_dim)
        self.ks, self.t, self.iters = tuple(num_prototypes), temperature, kmeans_iterations
        for h, k in enumerate(self.ks):
            self.register_buffer(f"prototypes{h}", torch.zeros(k, projection_dim))
        self.register_buffer("assignments", torch.full((len(self.ks), num_samples), -100, dtype=torch.long))
        self.memory_index = self.memory = None
        self.start = 0
        j = simclr_jitter(0.5)
        self.augment = [Augment(32, (0.14, 1.0), j) for _ in range(2)] + [
            Augment(16, (0.05, 0.14), j) for _ in range(num_local)
        ]

    def prototypes(self, h):
        return getattr(self, f"prototypes{h}")

    def embed(self, views):
        return F.normalize(self.projector(torch.cat(self.encode_groups(views))), dim=1)

    @torch.no_grad()
    def init_memory(self, batches, gen):
        """`batches`: (images, indices) pairs of one pass over the data, each drawn into its crops."""
        index, memory = [], ([], [])
        for images, rows in batches:
            views = self.views(images, gen)
            for j in (0, 1):
                memory[j].append(self.embed([views[j]]))
            index.append(torch.as_tensor(rows, dtype=torch.long))
        self.memory_index, self.memory = torch.cat(index), torch.stack([torch.cat(m) for m in memory])

    @torch.no_grad()
    def begin_epoch(self, epoch):
        """cluster_memory: new prototypes and each remembered sample's cluster, per head."""
        self.assignments.fill_(-100)
        for h, k in enumerate(self.ks):
            bank = self.memory[h % 2]
            centroids = bank[torch.randperm(len(bank))[:k]]
            for n_iter in range(self.iters + 1):
                assigned = (bank @ centroids.T).max(dim=1)[1]
                if n_iter == self.iters:
                    break
                counts = torch.bincount(assigned, minlength=k)
                sums = torch.zeros_like(centroids).index_add_(0, assigned, bank)
                mask = counts > 0
                centroids[mask] = sums[mask] / counts[mask].unsqueeze(1).to(sums.dtype)
                centroids = F.normalize(centroids, dim=1)
            self.prototypes(h).copy_(centroids)
            self.assignments[h][self.memory_index] = assigned
        self.start = 0

    def loss(self, views, step):
        z = self.embed(views)
        self.emb = z.detach()[: 2 * len(views[0])]
        total = 0.0
        for h in range(len(self.ks)):
            targets = self.assignments[h][self.indices].repeat(len(views))
            total = total + F.cross_entropy(z @ self.prototypes(h).T / self.t, targets, ignore_index=-100)
        return total / len(self.ks)

    @torch.no_grad()
    def after_step(self, step):
        b = len(self.indices)
        rows = slice(self.start, self.start + b)
        self.memory_index[rows] = self.indices
        self.memory[0, rows], self.memory[1, rows] = self.emb[:b], self.emb[b:]
        self.start += b


class MAE(Method):
    """MAE through the parity harness: torch_vit.MAE (models_mae.py) on torch_vit.ViT.

    The encoder is parity.vit_sizes(width) with MAE's fixed sine-cosine positions and ImageNet
    pixel standardisation (main_pretrain.py's Normalize); the weights are models_mae's
    `initialize_weights` (`own_init`: `--init` does not apply). Views: main_pretrain.py's
    RandomResizedCrop(scale (0.2, 1)) and flip, nothing else. Each step's masking noise comes
    from `draw_noise`, which parity_step0 records to replay in keras_ssl.
    """

    own_init = True
    num_views = 1

    def __init__(self, width, mask_ratio=0.75, decoder_dim=128, decoder_depth=2, decoder_heads=4, norm_pix_loss=True):
        nn.Module.__init__(self)  # not Method's: no ResNet
        import torch_vit
        from parity import vit_sizes

        self.encoder = torch_vit.ViT(**vit_sizes(width), positions="sincos", pixel_norm="imagenet")
        self.mae = torch_vit.MAE(self.encoder, mask_ratio, decoder_dim, decoder_depth, decoder_heads, norm_pix_loss)
        self.dim = self.encoder.dim
        self.augment = Augment(32, (0.2, 1.0), None, p_jitter=0.0, p_gray=0.0)

    def draw_noise(self, b, n):
        return torch.rand(b, n)

    def loss(self, views, step):
        images = views[0]
        loss, _, _ = self.mae(images, noise=self.draw_noise(len(images), self.encoder.num_patches))
        return loss

    def keras_weights(self, grad=False):
        import torch_vit

        if grad:
            raise NotImplementedError("the ViT references hand over weights only (no --gradients)")
        return torch_vit.keras_arrays(self.mae)


class SimMIM(Method):
    """SimMIM through the parity harness: torch_vit.SimMIM (microsoft/SimMIM) on torch_vit.ViT.

    The encoder is parity.vit_sizes(width) with SimMIM's ViT (relative position bias shared by the
    blocks, LayerScale 0.1, mean pooling, ImageNet standardisation, BEiT's q/v biases and
    initialisation), stochastic depth off on both sides so that the comparison is about the
    method. Views: data_simmim.py's RandomResizedCrop(scale (0.67, 1)) and flip. Each step's
    masks come from `draw_mask` (the official MaskGenerator on a generator seeded from the
    weights' seed), which parity_step0 records to replay in keras_ssl.
    """

    own_init = True
    num_views = 1

    def __init__(self, width, mask_patch_size=8, mask_ratio=0.6):
        nn.Module.__init__(self)  # not Method's: no ResNet
        import torch_vit
        from parity import vit_sizes

        options = dict(positions="relative", layerscale=0.1, pool="mean", pixel_norm="imagenet")
        self.encoder = torch_vit.ViT(**vit_sizes(width), **options, qkv_bias="qv", initializer="beit")
        self.simmim = torch_vit.SimMIM(self.encoder)
        self.dim = self.encoder.dim
        rng = np.random.default_rng(int(torch.randint(2**31, ())))
        self.masks = torch_vit.MaskGenerator(
            self.encoder.image_size, mask_patch_size, self.encoder.patch_size, mask_ratio, rng
        )
        self.augment = Augment(32, (0.67, 1.0), None, p_jitter=0.0, p_gray=0.0)

    def draw_mask(self, b):
        return torch.from_numpy(np.stack([self.masks() for _ in range(b)]))

    def loss(self, views, step):
        images = views[0]
        loss, _ = self.simmim(images, self.draw_mask(len(images)))
        return loss

    def keras_weights(self, grad=False):
        import torch_vit

        if grad:
            raise NotImplementedError("the ViT references hand over weights only (no --gradients)")
        return torch_vit.keras_arrays(self.simmim)


class MSN(Method):
    """MSN through the parity harness: torch_vit.MSN (facebookresearch/msn) on torch_vit.ViT.

    The encoder is parity.vit_sizes(width) with learned positions (the class token's row
    trained too) and ImageNet standardisation, initialised as deit.py (`_msn_init`). Views
    (data_manager.py's `make_transforms`, blur off at 32 px as keras_ssl's): the target and the
    anchor crop RandomResizedCrop(32, (0.3, 1)), then `num_focal` crops of 16 px, (0.05, 0.3),
    flip and colour strength 0.5 on every crop. The anchor's kept patches come from
    `draw_keep` (deit.py's one `randperm` for the batch), which parity_step0 records to replay in
    keras_ssl. After the step, msn_train.py's EMA of encoder and head (`momentum_schedule`
    "linear": 0.996 -> 1 over 1.25 x the run; "cosine": keras_ssl's, parity_step0's `--align`).
    """

    own_init = True
    momentum_schedule = "linear"

    def __init__(self, width, momentum=0.996, momentum_end=1.0, num_focal=4, **options):
        nn.Module.__init__(self)  # not Method's: no ResNet
        import torch_vit
        from parity import vit_sizes

        vit = torch_vit.ViT(**vit_sizes(width), positions="learned", pixel_norm="imagenet")
        _msn_init(vit)
        self.msn = torch_vit.MSN(vit, **options)  # its target copies are made from this init
        self.encoder, self.dim = self.msn.encoder, vit.dim
        self.tau0, self.tau1 = momentum, momentum_end
        jitter = simclr_jitter(0.5)
        self.augment = [Augment(32, (0.3, 1.0), jitter) for _ in range(2)]
        self.augment += [Augment(16, (0.05, 0.3), jitter) for _ in range(num_focal)]

    def draw_keep(self, n):
        return torch.randperm(n)[: self.msn.num_kept(n)]

    def loss(self, views, step):
        return self.msn(views, keep=self.draw_keep(self.encoder.num_patches))["loss"]

    def momentum(self, step):
        if self.momentum_schedule == "cosine":
            return self.momentum_at(step, self.tau0, self.tau1)
        return self.tau0 + step * (self.tau1 - self.tau0) / (1.25 * self.total_steps)  # ipe_scale 1.25

    def after_step(self, step):
        tau = self.momentum(step)
        self.ema(self.msn.encoder, self.msn.target_encoder, tau)
        self.ema(self.msn.head, self.msn.target_head, tau)

    def keras_weights(self, grad=False):
        import torch_vit

        if grad:
            raise NotImplementedError("the ViT references hand over weights only (no --gradients)")
        out = torch_vit.keras_arrays(self.encoder)
        # keras_ssl's MSNHead.weights order: each Dense's kernel and bias, each BatchNorm's four.
        for i, (tensor, kind) in enumerate(torch_vit._msn_head_entries(self.msn.head)):
            out[f"msn/head/{i}"] = torch_vit._to_keras(tensor, kind)
        out["msn/prototypes"] = self.msn.prototypes.detach().numpy()
        return out


@torch.no_grad()
def _msn_init(vit):
    """deit.py's init (keras_ssl's `"msn"` preset): timm's trunc_normal_(.02) Linear and tokens, zero biases,
    the patch convolution kaiming_normal_(fan_in, relu), bias 0."""
    for m in vit.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.kaiming_normal_(vit.patch_embed.weight, mode="fan_in", nonlinearity="relu")
    nn.init.zeros_(vit.patch_embed.bias)
    nn.init.trunc_normal_(vit.cls_token, std=0.02)
    nn.init.trunc_normal_(vit.pos_embed, std=0.02)


class _MeanTokens(nn.Module):
    """I-JEPA's evaluated features: the encoder's patch tokens averaged (keras_ssl's `pool="mean"`)."""

    def __init__(self, encoder):
        super().__init__()
        self.inner = encoder

    def forward(self, images):
        return self.inner(images).mean(dim=1)


class _Crop(Augment):
    """RandomResizedCrop alone: I-JEPA's make_transforms (no flip, no colour, no blur)."""

    def __call__(self, x, gen):
        b, _, height, width = x.shape
        top, left, h, w = self.boxes(b, height, width, gen)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w / width, (2 * left + w) / width - 1
        theta[:, 1, 1], theta[:, 1, 2] = h / height, (2 * top + h) / height - 1
        grid = F.affine_grid(theta, (b, 3, self.size, self.size), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class IJEPA(Method):
    """I-JEPA through the parity harness: torch_vit_ijepa.IJEPA (facebookresearch/ijepa).

    The encoder is parity.vit_sizes(width) without class token, sine-cosine positions and ImageNet
    standardisation; the predictor `predictor_dim` wide (None: keras_ssl's `min(384, dim)`) with
    the encoder's heads; init_model's initialisation. Each step's masks come from `draw_masks`, the
    official MaskCollator (multiblock.py) with `min_keep` scaled from the configs' 10 of 196 patches
    to 4 of 64 (10 would hang on 9-patch targets), which parity_step0 records to replay in keras_ssl.
    Views: one RandomResizedCrop(32, (0.3, 1)). After the step, train.py's EMA, linear over the run.
    `encoder` (what the harness evaluates) mean-pools the context encoder's tokens.
    """

    own_init = True
    num_views = 1

    def __init__(
        self,
        width,
        predictor_dim=None,
        predictor_depth=6,
        predictor_heads=None,
        num_targets=4,
        target_scale=(0.15, 0.2),
        target_aspect=(0.75, 1.5),
        context_scale=(0.85, 1.0),
        loss="smooth_l1",
        momentum=0.996,
        momentum_end=1.0,
        min_keep=4,
    ):
        nn.Module.__init__(self)  # not Method's: no ResNet
        import torch_vit_ijepa
        from parity import vit_sizes

        sizes = vit_sizes(width)
        dim = sizes.pop("dim")
        self.ijepa = torch_vit_ijepa.IJEPA(
            **sizes,
            dim=dim,
            predictor_dim=predictor_dim or min(384, dim),
            predictor_depth=predictor_depth,
            predictor_heads=predictor_heads,
            loss=loss,
            pixel_norm="imagenet",
        )
        self.encoder, self.dim = _MeanTokens(self.ijepa.encoder), dim
        self.tau0, self.tau1 = momentum, momentum_end
        grid = self.ijepa.encoder.grid_size
        self.masks = torch_vit_ijepa.MaskCollator(
            grid,
            context_scale,
            target_scale,
            target_aspect,
            1,
            num_targets,
            min_keep,
            seed=int(torch.randint(2**31, ())),
        )
        self.augment = _Crop(32, (0.3, 1.0), None)

    def draw_masks(self, b):
        return self.masks(b)

    def loss(self, views, step):
        images = views[0]
        masks_enc, masks_pred = self.draw_masks(len(images))
        loss, _, _ = self.ijepa(images, masks_enc, masks_pred)
        return loss

    def after_step(self, step):
        self.ijepa.momentum_update(self.tau0 + step * (self.tau1 - self.tau0) / self.total_steps)

    def keras_weights(self, grad=False):
        import torch_vit_ijepa

        if grad:
            raise NotImplementedError("the ViT references hand over weights only (no --gradients)")
        return torch_vit_ijepa.keras_arrays(self.ijepa)


def _block_mask(rng, grid, target, min_patches, max_patches=math.inf, min_aspect=0.3):
    """BEiT's `MaskingGenerator` (dinov2/data/masking.py; iBOT's loader.py inlines it): rounds of up to 10
    tries at one rectangle, until `target` patches are masked or a round adds none. `(grid * grid,)` bool."""
    log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
    mask, count = np.zeros((grid, grid), bool), 0
    while count < target:
        most = min(target - count, max_patches)
        delta = 0
        for _ in range(10):
            area = rng.uniform(min_patches, most)
            aspect = math.exp(rng.uniform(*log_aspect))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if w < grid and h < grid:
                top, left = rng.randint(0, grid - h), rng.randint(0, grid - w)
                new = h * w - int(mask[top : top + h, left : left + w].sum())
                if 0 < new <= most:
                    mask[top : top + h, left : left + w] = True
                    delta += new
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
    return mask.reshape(-1)


@torch.no_grad()
def _official_vit_init(vit, class_token_std=0.02):
    """iBOT's and DINOv2's ViT init: trunc_normal_(.02) Linear weights and position table, zero biases,
    LayerNorm (1, 0), the patch convolution PyTorch's default; the class token N(0, 0.02^2) cut (iBOT) or
    N(0, 1e-6^2) (DINOv2's `class_token_std`). LayerScale keeps its init value."""
    for m in vit.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    vit.patch_embed.reset_parameters()
    nn.init.trunc_normal_(vit.pos_embed, std=0.02)
    if class_token_std == 0.02:
        nn.init.trunc_normal_(vit.cls_token, std=0.02)
    else:
        nn.init.normal_(vit.cls_token, std=class_token_std)


def _distill_head_arrays(prefix, head):
    """A torch_vit_ibot `DINOHead` in keras_ssl's `DINOHead` layout: each Dense's kernel and bias, `last_v`, `last_g`."""
    out = {}
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    for i, linear in enumerate(linears):
        out[f"{prefix}/mlp/{i}/kernel"] = linear.weight.detach().numpy().T.copy()
        out[f"{prefix}/mlp/{i}/bias"] = linear.bias.detach().numpy().copy()
    out[f"{prefix}/last_v"] = head.last_layer.weight_v.detach().numpy().T.copy()
    out[f"{prefix}/last_g"] = head.last_layer.weight_g.detach().numpy().reshape(-1).copy()
    return out


class _Distillation(Method):
    """What IBOT and DINOv2 share: the ViT, the multi-crop views, block masks, freezing, EMA, weights."""

    own_init = True
    offset = 0.1  # the official position interpolation's; parity_step0's --align: 0 (keras_ssl's resize)

    def _setup(self, vit, global_scale, local_scale, num_local, momentum, momentum_end, mask_ratio, mask_probability):
        self.encoder, self.dim = vit, vit.dim
        self.tau0, self.tau1 = momentum, momentum_end
        self.mask_ratio, self.mask_probability = tuple(mask_ratio), float(mask_probability)
        # The loader's masks come from Python's `random` (the workers'); its own stream, seeded from the weights'.
        self.rng = random.Random(int(torch.randint(2**31, ())))
        g = [Augment(32, global_scale, BYOL_JITTER), Augment(32, global_scale, BYOL_JITTER, p_solarize=0.2)]
        self.augment = g + [Augment(16, local_scale, BYOL_JITTER) for _ in range(num_local)]

    def momentum(self, step):
        return self.momentum_at(step, self.tau0, self.tau1)  # utils.cosine_scheduler(m, 1, epochs, iters)[step]

    def warmup_steps(self):
        return min(self.steps_per_epoch, self.total_steps)  # one epoch, as keras_only_options' warmup_teacher_steps

    def drop_frozen_grads(self, step):
        if step < self.steps_per_epoch:  # freeze_last_layer = 1 epoch: every "last_layer" parameter's grad None
            for name, p in self.named_parameters():
                if "last_layer" in name:
                    p.grad = None

    def after_step(self, step):
        tau = self.momentum(step)
        for online, target in self.ema_pairs():
            self.ema(online, target, tau)

    def keras_weights(self, grad=False):
        import torch_vit

        if grad:
            raise NotImplementedError("the ViT references hand over weights only (no --gradients)")
        out = torch_vit.keras_arrays(self.encoder)
        for attr, head in self.heads().items():
            out.update(_distill_head_arrays(f"distill/{attr}", head))
        out["distill/mask_token"] = self.mask_token().detach().numpy().reshape(-1).copy()
        return out


class IBOT(_Distillation):
    """iBOT through the parity harness: torch_vit_ibot.IBOT (bytedance/ibot main_ibot.py) on torch_vit.ViT.

    The encoder is parity.vit_sizes(width) with learned positions and ImageNet standardisation,
    initialised as ibot's vision_transformer.py; one head for class and patch tokens (the paper's
    `--shared_head true`; keras_ssl's `shared_head=False` is another head, not iBOT's). Views:
    keras_ssl's ibot_views scales (the README's ViT-S/16 run: global (0.25, 1), local (0.05, 0.25)),
    DINO's augmentations without blur. Masks: loader.py's ImageFolderMask for each global crop of
    each image (`--pred_ratio 0 0.3 --pred_ratio_var 0 0.2` is mask_ratio (0.1, 0.5) with
    probability 0.5), from `draw_masks`, which parity_step0 records to replay in keras_ssl. The
    temperatures' official np.linspace warm-up runs per epoch; here per step over the first epoch
    (keras_ssl warms up per step).
    """

    def __init__(
        self,
        width,
        output_dim=8192,
        hidden_dim=2048,
        bottleneck_dim=256,
        shared_head=True,
        norm_last_layer=True,
        student_temperature=0.1,
        teacher_temperature=0.04,
        warmup_teacher_temperature=0.04,
        teacher_patch_temperature=0.07,
        warmup_teacher_patch_temperature=0.04,
        center_momentum=0.9,
        patch_center_momentum=0.9,
        mask_ratio=(0.1, 0.5),
        mask_probability=0.5,
        cls_weight=1.0,
        patch_weight=1.0,
        momentum=0.996,
        momentum_end=1.0,
        num_local=4,
    ):
        nn.Module.__init__(self)  # not Method's: no ResNet
        import torch_vit
        import torch_vit_ibot
        from parity import vit_sizes

        if not shared_head:
            raise ValueError("the reference is iBOT's shared head (keras_ssl's shared_head=False is a second head)")
        if mask_probability not in (0.5, 1.0):
            raise ValueError(f"--pred_ratio's random.choice gives mask_probability 0.5 or 1, not {mask_probability}")
        vit = torch_vit.ViT(**vit_sizes(width), positions="learned", pixel_norm="imagenet")
        _official_vit_init(vit)
        self.ibot = torch_vit_ibot.IBOT(
            vit, out_dim=output_dim, patch_out_dim=output_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim
        )
        if norm_last_layer:  # main_ibot.py: `last_layer.weight_g.requires_grad = False`
            self.ibot.student_head.last_layer.weight_g.requires_grad_(False)
        self.temperatures = dict(
            warmup_teacher_temp=warmup_teacher_temperature,
            teacher_temp=teacher_temperature,
            warmup_teacher_temp2=warmup_teacher_patch_temperature,
            teacher_temp2=teacher_patch_temperature,
            student_temp=student_temperature,
            center_momentum=center_momentum,
            center_momentum2=patch_center_momentum,
            lambda1=cls_weight,
            lambda2=patch_weight,
        )
        self.num_local, self.output_dim, self.schedule_steps = num_local, output_dim, None
        self._setup(vit, (0.25, 1.0), (0.05, 0.25), num_local, momentum, momentum_end, mask_ratio, mask_probability)

    def heads(self):
        return {"head": self.ibot.student_head}

    def mask_token(self):
        return self.ibot.masked_embed

    def ema_pairs(self):
        # main_ibot.py's EMA over the parameters student and teacher share by name: not the mask token.
        return [(self.ibot.student, self.ibot.teacher), (self.ibot.student_head, self.ibot.teacher_head)]

    def pred_ratio(self):
        """ImageFolderMask.get_pred_ratio: one ratio per (pred_ratio, var) pair, then random.choice among them."""
        low, high = self.mask_ratio
        mean, var = (low + high) / 2, (high - low) / 2
        pairs = [(mean, var)] if self.mask_probability == 1.0 else [(0.0, 0.0), (mean, var)]
        choices = [self.rng.uniform(m - v, m + v) if v > 0 else m for m, v in pairs]
        return self.rng.choice(choices)

    def draw_masks(self, b):
        """Each image's global crops' masks (loader.py, per image then crop), crop-major `(2 B, N)` bool."""
        grid = self.encoder.grid_size
        masks = [
            [_block_mask(self.rng, grid, self.pred_ratio() * grid * grid, (grid // 3) ** 2) for _ in range(2)]
            for _ in range(b)
        ]
        return torch.from_numpy(np.stack([m[c] for c in range(2) for m in masks]))

    def loss_module(self):
        """main_ibot.py's iBOTLoss, its temperature schedules over this run's steps (built on first use)."""
        import torch_vit_ibot

        if self.schedule_steps != self.total_steps:
            t = self.temperatures
            warm, epochs = self.warmup_steps(), self.total_steps
            loss = torch_vit_ibot.iBOTLoss(
                self.output_dim, self.output_dim, 2, self.num_local, t["warmup_teacher_temp"], t["teacher_temp"],
                t["warmup_teacher_temp2"], t["teacher_temp2"], warm, epochs, t["student_temp"],
                t["center_momentum"], t["center_momentum2"], t["lambda1"], t["lambda2"],
            )  # fmt: skip
            loss.center, loss.center2 = self.ibot.loss.center, self.ibot.loss.center2
            self.ibot.loss, self.schedule_steps = loss, self.total_steps
        return self.ibot.loss

    def loss(self, views, step):
        self.loss_module()
        self.ibot.offset = self.offset
        masks = self.draw_masks(len(views[0]))
        return self.ibot(views[:2], views[2:], masks.chunk(2), epoch=step)["loss"]


class DINOv2(_Distillation):
    """DINOv2 through the parity harness: torch_vit_ibot.DINOv2 (facebookresearch/dinov2) on torch_vit.ViT.

    The encoder is parity.vit_sizes(width) with learned positions, LayerScale 1e-5 and ImageNet
    standardisation, initialised as dinov2's vision_transformer.py `init_weights`; one head
    (`ibot.separate_head: false`) unless `shared_head=False`. Views: ssl_default_config.yaml's scales,
    global (0.32, 1), local (0.05, 0.32), DINO's augmentations without blur. Masks: collate.py's
    `collate_data_and_cast` with masking.py's MaskingGenerator (4 to N / 2 patches a block) over
    both global crops, from `draw_masks`, which parity_step0 records to replay in keras_ssl. The
    teacher temperature's np.linspace warm-up per step, over the first epoch here.
    """

    def __init__(
        self,
        width,
        output_dim=65536,
        patch_output_dim=65536,
        hidden_dim=2048,
        bottleneck_dim=256,
        shared_head=True,
        norm_last_layer=False,
        centering="sinkhorn_knopp",
        koleo_weight=0.1,
        student_temperature=0.1,
        teacher_temperature=0.07,
        warmup_teacher_temperature=0.04,
        center_momentum=0.9,
        mask_ratio=(0.1, 0.5),
        mask_probability=0.5,
        cls_weight=1.0,
        patch_weight=1.0,
        momentum=0.992,
        momentum_end=1.0,
        num_local=4,
    ):
        nn.Module.__init__(self)  # not Method's: no ResNet
        import torch_vit
        import torch_vit_ibot
        from parity import vit_sizes

        vit = torch_vit.ViT(**vit_sizes(width), positions="learned", pixel_norm="imagenet", layerscale=1e-5)
        _official_vit_init(vit, class_token_std=1e-6)
        self.dinov2 = torch_vit_ibot.DINOv2(
            vit,
            out_dim=output_dim,
            hidden_dim=hidden_dim,
            bottleneck_dim=bottleneck_dim,
            separate_head=not shared_head,
            patch_out_dim=patch_output_dim,
            centering=centering,
            koleo_loss_weight=koleo_weight,
            dino_loss_weight=cls_weight,
            ibot_loss_weight=patch_weight,
            student_temp=student_temperature,
            center_momentum=center_momentum,
        )
        if norm_last_layer:  # DINO's option; DINOv2's heads train weight_g
            for head in self.heads().values():
                head.last_layer.weight_g.requires_grad_(False)
        self.tt, self.wtt = teacher_temperature, warmup_teacher_temperature
        self._setup(vit, (0.32, 1.0), (0.05, 0.32), num_local, momentum, momentum_end, mask_ratio, mask_probability)

    def heads(self):
        d = self.dinov2
        return {"head": d.dino_head, **({"patch_head": d.ibot_head} if d.separate_head else {})}

    def mask_token(self):
        return self.dinov2.mask_token

    def ema_pairs(self):
        d = self.dinov2
        pairs = [(d.student, d.teacher), (d.dino_head, d.teacher_dino_head)]
        return pairs + ([(d.ibot_head, d.teacher_ibot_head)] if d.separate_head else [])

    def draw_masks(self, b):
        """collate_data_and_cast's masks of the `2 b` global crops, crop-major `(2 b, N)` bool."""
        grid = self.encoder.grid_size
        n, count = grid * grid, 2 * b
        masked = int(count * self.mask_probability)
        probs = torch.linspace(*self.mask_ratio, masked + 1)
        draw = lambda target: _block_mask(self.rng, grid, target, 4, 0.5 * n)
        masks = [draw(int(n * self.rng.uniform(probs[i], probs[i + 1]))) for i in range(masked)]
        masks += [draw(0) for _ in range(masked, count)]
        self.rng.shuffle(masks)
        return torch.from_numpy(np.stack(masks))

    def loss(self, views, step):
        import torch_vit_ibot

        self.dinov2.offset = self.offset
        masks = self.draw_masks(len(views[0]))
        temperature = torch_vit_ibot.official_warmup(self.wtt, self.tt, self.warmup_steps(), step)
        local = torch.cat(views[2:]) if len(views) > 2 else None
        return self.dinov2(torch.cat(views[:2]), local, masks, temperature)["loss"]


METHODS = {
    "tico": TiCo,
    "vibcreg": VIbCReg,
    "fastsiam": FastSiam,
    "wmse": WMSE,
    "nnclr": NNCLR,
    "moco3": MoCoV3,
    "ressl": ReSSL,
    "mmcr": MMCR,
    "nnbyol": NNBYOL,
    "nnsiam": NNSiam,
    "dcl": SimCLRDCL,
    "dclw": functools.partial(SimCLRDCL, weighting="von_mises"),
    "supcon": SupCon,
    "deepclusterv2": DeepClusterV2,
    "mae": MAE,
    "simmim": SimMIM,
    "msn": MSN,
    "ijepa": IJEPA,
    "ibot": IBOT,
    "dinov2": DINOv2,
}
