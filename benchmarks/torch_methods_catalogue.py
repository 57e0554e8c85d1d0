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
  (solo-learn's solo/methods/nnclr.py, VISSL's NNclrInfoNCECriterion); `symmetrize="paper"`
  gives one reading of the paper's Sec. 3.2 instead (its eq. 3 plus the transposed term).
- MoCo v3, ResNet (facebookresearch/moco-v3 moco/builder.py MoCo_ResNet): 2-layer
  projector ending in BatchNorm without affine, 2-layer predictor, momentum encoder
  updated before the keys with the cosine momentum, `ctr(q1, k2) + ctr(q2, k1)` each `* 2T`.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch_methods import Augment, Method, _copy_target, byol_pair, mlp, simclr_jitter


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


class NNCLR(Method):
    """NNCLR, from the paper (Dwibedi et al. 2021, arXiv:2104.14548v2); no official code exists.

    - Heads (the paper's implementation details, quoted in lightly's
      lightly/models/modules/heads.py NNCLRProjectionHead/NNCLRPredictionHead
      docstrings): projection MLP of 3 layers [2048, 2048, d], "all
      fully-connected layers are followed by batch-normalization", ReLU after
      all but the last; prediction MLP [4096, d], BatchNorm + ReLU after the
      hidden layer, "the last layer has no batch-norm or activation". Here the widths are keras_ssl's: `hidden_dim` for both heads
      (the paper's predictor is twice the projector's width; pass
      `prediction_hidden_dim` for that). The output BatchNorm has no affine
      parameters (the paper does not say; keras_ssl's layout, so the
      trainable weights match; solo-learn and lightly keep them affine).
    - Support set (Sec. 3.2): a FIFO queue initialised as a random matrix,
      the NN looked up (eq. 4, L2-normalised, argmin of the L2 distance =
      argmax of the cosine) before the step's batch enters it; only view 1's
      embeddings are added, after the loss.
    - Loss, by default the public implementations' (solo-learn solo/methods/nnclr.py
      training_step and solo/losses/nnclr.py; VISSL NNclrInfoNCECriterion): the mean of
      `CE(NN(z1) p2^T / T)` and `CE(NN(z2) p1^T / T)`, rows only, NN() without gradient.
      `symmetrize="paper"` is one reading of the paper's Sec. 3.2 (unconfirmed: the text
      was not available here): eq. 3 with z from view 1 and p+ = g(z+) from view 2,
      plus the same logits with the softmax over the neighbours, summed.
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
        prediction_hidden_dim=None,
        symmetrize="views",
    ):
        super().__init__(width)
        if symmetrize not in ("paper", "views"):
            raise ValueError(f"symmetrize must be 'paper' or 'views', got {symmetrize!r}")
        hidden = hidden_dim or min(2048, 4 * self.dim)
        # Linear-BN-ReLU, Linear-BN-ReLU, Linear-BN: a bias before each BN would be cancelled.
        self.projector = mlp(self.dim, hidden, projection_dim, layers=3, out_bn=True)
        # Linear-BN-ReLU, Linear (with its bias): "the last layer has no batch-norm or activation".
        self.predictor = mlp(projection_dim, prediction_hidden_dim or hidden, projection_dim)
        self.t, self.symmetrize = temperature, symmetrize
        # "initialized as a random matrix": unit rows, as the NN lookup normalises (eq. 4).
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, projection_dim), dim=1))
        self.ptr = 0
        self.augment = byol_pair()

    @torch.no_grad()
    def nearest(self, z):
        """NN(z, Q): the support row closest (cosine) to each row of `z`, no gradient."""
        return self.queue[(F.normalize(z, dim=1) @ self.queue.T).argmax(1)]

    def contrast(self, nn_, p):
        """The logits `NN(z_i) · p+_k / T` (both L2-normalised, as SimCLR's eq. 1 which eq. 3 follows)."""
        return nn_ @ F.normalize(p, dim=1).T / self.t

    def loss(self, views, step):
        z1, z2 = (self.projector(h) for h in self.encode_groups(views))
        nn1 = self.nearest(z1)
        labels = torch.arange(z1.shape[0])
        if self.symmetrize == "paper":
            logits = self.contrast(nn1, self.predictor(z2))
            # eq. 3 (softmax over the predictions) + the added term (softmax over the neighbours)
            loss = F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)
        else:
            p1, p2 = self.predictor(z1), self.predictor(z2)
            nn2 = self.nearest(z2)
            loss = (
                F.cross_entropy(self.contrast(nn1, p2), labels) + F.cross_entropy(self.contrast(nn2, p1), labels)
            ) / 2
        self.enqueue(z1)
        return loss

    @torch.no_grad()
    def enqueue(self, z):
        """Sec. 3.2: the batch's view-1 embeddings replace the oldest rows (a ring buffer holds the same set)."""
        b = z.shape[0]
        idx = (self.ptr + torch.arange(b)) % self.queue.shape[0]
        self.queue[idx] = F.normalize(z.detach(), dim=1)
        self.ptr = (self.ptr + b) % self.queue.shape[0]


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


METHODS = {
    "tico": TiCo,
    "vibcreg": VIbCReg,
    "fastsiam": FastSiam,
    "wmse": WMSE,
    "nnclr": NNCLR,
    "moco3": MoCoV3,
}
