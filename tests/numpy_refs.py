"""Independent float64 NumPy references of the self-supervised losses.

Written from the papers' equations and their official code, never calling
`keras_ssl.losses`, so that a test comparing a method's loss with them can
catch a bug in the loss itself. Every function takes array-likes (cast to
float64) and returns a Python float (or an array for `sinkhorn`). Each one is
anchored by a hand-computed case in the test file of its method.
"""

import numpy as np


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _unit_rows(x):
    x = _f64(x)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _log_softmax(logits):
    logits = _f64(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _softmax(logits):
    return np.exp(_log_softmax(logits))


def _off_diagonal(matrix):
    return matrix[~np.eye(len(matrix), dtype=bool)]


def nt_xent(z1, z2, temperature):
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1 and Algorithm 1).

    The 2N views are `[z1; z2]`; view k's positive is its twin (k + N mod 2N).
    `l(i, j) = -log(exp(sim(i, j)/tau) / sum_{k != i} exp(sim(i, k)/tau))` with
    cosine `sim`, and the loss is the mean of `l` over the 2N views (the paper's
    `1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)]`). Note: google-research/simclr's
    `add_contrastive_loss` returns `mean(loss_a + loss_b)`, twice this value.
    """
    z = _unit_rows(np.concatenate([_f64(z1), _f64(z2)]))
    n = len(z)
    sim = z @ z.T / temperature
    total = 0.0
    for i in range(n):
        positive = (i + n // 2) % n
        others = np.delete(sim[i], i)  # self-similarity removed
        top = others.max()
        total += -(sim[i, positive] - top - np.log(np.exp(others - top).sum()))
    return total / n


def vicreg_terms(z1, z2, eps=1e-4):
    """VICReg's three unweighted terms, as facebookresearch/vicreg `main_vicreg.py`.

    invariance: `F.mse_loss(x, y)`, the mean over all entries.
    variance: `mean(relu(1 - sqrt(var(x) + eps))) / 2 + (same for y) / 2`, the
        unbiased variance of each dimension (`torch.var`'s default).
    covariance: `sum(offdiag(cov(x))^2) / D + (same for y)`, `cov = x_c^T x_c / (N - 1)`.

    The paper (Bardes et al. 2022, eq. 6) writes `mu [v(Z) + v(Z')]`, without
    the `/ 2` of the official code; this follows the official code.
    """
    z1, z2 = _f64(z1), _f64(z2)
    n, d = z1.shape
    variance = covariance = 0.0
    for z in (z1, z2):
        centred = z - z.mean(axis=0)
        cov = centred.T @ centred / (n - 1)
        std = np.sqrt(np.diag(cov) + eps)
        variance += np.mean(np.maximum(0.0, 1.0 - std)) / 2
        covariance += np.sum(_off_diagonal(cov) ** 2) / d
    return {
        "invariance": float(np.mean((z1 - z2) ** 2)),
        "variance": float(variance),
        "covariance": float(covariance),
    }


def vicreg(z1, z2, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=1e-4):
    """VICReg's loss: `sim_coeff * inv + std_coeff * var + cov_coeff * cov`."""
    t = vicreg_terms(z1, z2, eps)
    return sim_coeff * t["invariance"] + std_coeff * t["variance"] + cov_coeff * t["covariance"]


def barlow_twins_terms(z1, z2, lambd, eps=1e-5):
    """Barlow Twins' two terms (Zbontar et al. 2021, eq. 1-2; facebookresearch/barlowtwins).

    Each view is standardised over the batch as `nn.BatchNorm1d(affine=False)`
    in training mode does (biased variance, `eps` = BatchNorm's 1e-5), then
    `C = z1n^T z2n / N`; `on_diagonal = sum_i (1 - C_ii)^2` and
    `off_diagonal = lambd * sum_{i != j} C_ij^2`.
    """

    def standardise(z):
        z = _f64(z)
        return (z - z.mean(axis=0)) / np.sqrt(z.var(axis=0) + eps)

    z1n, z2n = standardise(z1), standardise(z2)
    c = z1n.T @ z2n / len(z1n)
    return {
        "on_diagonal": float(np.sum((1.0 - np.diag(c)) ** 2)),
        "off_diagonal": float(lambd * np.sum(_off_diagonal(c) ** 2)),
    }


def barlow_twins(z1, z2, lambd, scale=1.0, eps=1e-5):
    """Barlow Twins' loss: `scale * (on_diagonal + lambd * sum off-diagonal^2)`.

    `scale` is the first official release's `--scale-loss`, which multiplied
    both terms.
    """
    t = barlow_twins_terms(z1, z2, lambd, eps)
    return scale * (t["on_diagonal"] + t["off_diagonal"])


def dino(student, teacher, center, student_temperature, teacher_temperature):
    """DINO's loss, as facebookresearch/dino `DINOLoss.forward`.

    Teacher `q = softmax((t - center) / tau_t)` for each global crop `iq`,
    student `log_softmax(s / tau_s)` for each crop `v`; the mean over rows of
    `sum(-q * log p)` is averaged over every pair with `v != iq`.
    """
    center = _f64(center).reshape(1, -1)
    total, pairs = 0.0, 0
    for iq, t in enumerate(teacher):
        q = _softmax((_f64(t) - center) / teacher_temperature)
        for v, s in enumerate(student):
            if v == iq:
                continue
            total += np.mean(np.sum(-q * _log_softmax(_f64(s) / student_temperature), axis=-1))
            pairs += 1
    return total / pairs


def sinkhorn(scores, epsilon, iterations):
    """SwAV's `distributed_sinkhorn` on one worker (facebookresearch/swav `main_swav.py`).

    `Q = exp(scores / eps).T` (K x B), divided by its total; then, `iterations`
    times, each prototype row scaled to total 1/K and each sample column to
    1/B; finally times B, so each sample's codes sum to 1. Returns `Q.T` (B x K).
    """
    q = np.exp(_f64(scores) / epsilon).T
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    q *= b
    return q.T


def swav(scores, assignment_crops=(0, 1), temperature=0.1, epsilon=0.05, iterations=3, queue_scores=None):
    """SwAV's swapped-prediction loss (Caron et al. 2020), as the official `train` loop.

    For each assignment crop `i`: its scores (with the queue's scores, if any,
    prepended: `torch.cat((queue @ prototypes, out))`) go through Sinkhorn and
    only the last B rows, the batch's, are kept as codes `q`; then
    `subloss = sum_{v != i} -mean(sum(q * log softmax(scores_v / T)))`,
    `loss += subloss / (num_crops - 1)`, and finally `loss /= len(assignment_crops)`.
    """
    scores = [_f64(s) for s in scores]
    if queue_scores is None:
        queue_scores = [None] * len(assignment_crops)
    loss = 0.0
    for i, queued in zip(assignment_crops, queue_scores):
        out = scores[i]
        batch = len(out)
        if queued is not None:
            out = np.concatenate([_f64(queued), out])
        q = sinkhorn(out, epsilon, iterations)[-batch:]
        subloss = 0.0
        for v in range(len(scores)):
            if v != i:
                subloss -= np.mean(np.sum(q * _log_softmax(scores[v] / temperature), axis=1))
        loss += subloss / (len(scores) - 1)
    return loss / len(assignment_crops)


def clip(image, text, logit_scale):
    """CLIP's symmetric loss (Radford et al. 2021, Figure 3's pseudocode).

    `logits = logit_scale * unit(image) @ unit(text).T`; the mean of the
    cross-entropies of the rows (image -> text) and of the columns
    (text -> image), each with label `i` for pair `i`.
    """
    logits = logit_scale * _unit_rows(image) @ _unit_rows(text).T
    labels = np.arange(len(logits))
    loss_i = -np.mean(_log_softmax(logits)[labels, labels])
    loss_t = -np.mean(_log_softmax(logits.T)[labels, labels])
    return (loss_i + loss_t) / 2


def numeric_grad(f, x, step=1e-6):
    """Central finite differences of the scalar `f` at `x` (float64)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        saved = x[index]
        x[index] = saved + step
        up = f(x)
        x[index] = saved - step
        down = f(x)
        x[index] = saved
        grad[index] = (up - down) / (2 * step)
    return grad
