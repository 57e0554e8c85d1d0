"""Float64 NumPy references for TiCo, VIbCReg and IterNorm, written from the official code.

- TiCo: lightly `lightly/loss/tico_loss.py` (`TiCoLoss.forward`, after lightly #1484 which
  detaches the batch term `B`), the paper's Algorithm 1 (Zhu et al. 2022).
- VIbCReg: ML4ITS/vibcreg `vibcreg/losses/{invariance,variance,covariance}_loss.py`
  (also solo-learn `solo/losses/vibcreg.py`), weights from `configs/frameworks/config_vibcreg.yaml`.
- IterNorm: ML4ITS/vibcreg `vibcreg/normalization/iter_norm.py` (= solo-learn
  `solo/utils/whitening.py`, from huangleiBuaa/IterNorm-pytorch): its `__init__` group rule,
  `iterative_normalization_py.forward` and its hand-written `backward`.

Never calls keras_ssl.
"""

import numpy as np
from numpy_refs import numeric_grad  # noqa: F401 (the tests use it from here)


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _normalize(x, axis):
    """`torch.nn.functional.normalize(x, p=2, dim=axis)`: divide by `max(||x||, 1e-12)`."""
    x = _f64(x)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


# ------------------------------------------------------------------ TiCo
def tico_covariance(z_a, C, beta):
    """lightly: `B = mm(z_a.T, z_a).detach() / N` on row-normalised `z_a`; `C = beta C + (1 - beta) B`."""
    z_a = _normalize(z_a, 1)
    return beta * _f64(C) + (1 - beta) * z_a.T @ z_a / len(z_a)


def tico_terms_given(z_a, z_b, C_new):
    """TiCo's two unweighted terms with the updated covariance `C_new` held fixed (it is detached).

    `transformative_invariance_loss = 1 - (z_a * z_b).sum(1).mean()` and
    `covariance_contrast_loss / rho = (mm(z_a, C) * z_a).sum(1).mean()`, rows normalised.
    """
    z_a, z_b = _normalize(z_a, 1), _normalize(z_b, 1)
    return {
        "invariance": float(1.0 - np.mean(np.sum(z_a * z_b, axis=1))),
        "covariance_contrast": float(np.mean(np.sum(z_a @ _f64(C_new) * z_a, axis=1))),
    }


def tico_terms(z_a, z_b, C, beta):
    """The terms of one `TiCoLoss.forward` from the covariance `C` before the batch."""
    return tico_terms_given(z_a, z_b, tico_covariance(z_a, C, beta))


def tico(z_a, z_b, C, beta, rho):
    """lightly's TiCo loss: `invariance + rho * covariance_contrast`."""
    terms = tico_terms(z_a, z_b, C, beta)
    return terms["invariance"] + rho * terms["covariance_contrast"]


# ------------------------------------------------------------------ VIbCReg
def vibcreg_terms(z1, z2, eps=1e-4):
    """ML4ITS/vibcreg: `mse_loss`, `vibcreg_var_loss` and `VIbCRegCovLoss`.

    variance: `mean(relu(1 - sqrt(var(z, dim=0) + 1e-4)))` per view (unbiased
        `torch.var`), the two views summed (no `/ 2`).
    covariance: `z - mean`, `F.normalize(dim=0)` (each feature's column to unit
        norm), `fxf = z^T z`, diagonal set to 0, `(fxf ** 2).mean()` over all
        `D^2` entries, summed over the views.
    """
    z1, z2 = _f64(z1), _f64(z2)
    variance = covariance = 0.0
    for z in (z1, z2):
        std = np.sqrt(z.var(axis=0, ddof=1) + eps)
        variance += np.mean(np.maximum(0.0, 1.0 - std))
        zn = _normalize(z - z.mean(axis=0), 0)
        fxf = zn.T @ zn
        np.fill_diagonal(fxf, 0.0)
        covariance += np.mean(fxf**2)
    return {
        "invariance": float(np.mean((z1 - z2) ** 2)),
        "variance": float(variance),
        "covariance": float(covariance),
    }


def vibcreg(z1, z2, sim_coeff=25.0, std_coeff=25.0, cov_coeff=200.0, eps=1e-4):
    """`lambda * sim + mu * var + nu * cov` (official defaults 25, 25, 200)."""
    t = vibcreg_terms(z1, z2, eps)
    return sim_coeff * t["invariance"] + std_coeff * t["variance"] + cov_coeff * t["covariance"]


# ------------------------------------------------------------------ IterNorm
def iternorm_groups(num_features, num_groups=64, num_channels=None):
    """`IterNorm.__init__`: `(num_groups, num_channels)`."""
    if num_channels is None:
        num_channels = (num_features - 1) // num_groups + 1
    num_groups = num_features // num_channels
    while num_features % num_channels != 0:
        num_channels //= 2
        num_groups = num_features // num_channels
    return num_groups, num_channels


class IterNorm:
    """A NumPy port of the official IterNorm on `(N, F)` inputs (dim=2), affine weight 1 and bias 0.

    `momentum` is PyTorch's (the weight of the new batch, 0.1).
    """

    def __init__(self, num_features, num_groups=64, T=5, eps=1e-5, momentum=0.1):
        self.g, self.nc = iternorm_groups(num_features, num_groups)
        self.T, self.eps, self.momentum = T, eps, momentum
        self.running_mean = np.zeros((self.g, self.nc, 1))
        self.running_wm = np.tile(np.eye(self.nc), (self.g, 1, 1))

    def forward(self, X, training=True):
        """`iterative_normalization_py.forward`; keeps what `backward` needs."""
        X = _f64(X)
        x = X.T.reshape(self.g, self.nc, -1)
        d, m = self.nc, x.shape[-1]
        if training:
            mean = x.mean(-1, keepdims=True)
            xc = x - mean
            P = [np.tile(np.eye(d), (self.g, 1, 1))]
            Sigma = self.eps * P[0] + xc @ xc.transpose(0, 2, 1) / m
            rTr = 1.0 / (Sigma * P[0]).sum((1, 2), keepdims=True)
            Sigma_N = Sigma * rTr
            for _ in range(self.T):
                P.append(1.5 * P[-1] - 0.5 * np.linalg.matrix_power(P[-1], 3) @ Sigma_N)
            wm = P[self.T] * np.sqrt(rTr)
            self.running_mean = self.momentum * mean + (1.0 - self.momentum) * self.running_mean
            self.running_wm = self.momentum * wm + (1.0 - self.momentum) * self.running_wm
            self.saved = (xc, rTr, Sigma_N, P[: self.T] + [wm])
        else:
            xc = x - self.running_mean
            wm = self.running_wm
        return (wm @ xc).reshape(X.shape[1], X.shape[0]).T

    def backward(self, grad):
        """`iterative_normalization_py.backward`: the gradient of the input given the output's."""
        xc, rTr, Sigma_N, P = self.saved
        P = [p.copy() for p in P]
        sn = Sigma_N.transpose(0, 2, 1)
        g, d, m = xc.shape
        g_ = _f64(grad).T.reshape(xc.shape)
        g_wm = g_ @ xc.transpose(0, 2, 1)
        g_P = g_wm * np.sqrt(rTr)
        wm = P[self.T]
        g_sn = 0
        for k in range(self.T, 1, -1):
            P[k - 1] = P[k - 1].transpose(0, 2, 1)
            P2 = P[k - 1] @ P[k - 1]
            g_sn = g_sn + P2 @ P[k - 1] @ g_P
            g_tmp = g_P @ sn
            g_P = 1.5 * g_P - 0.5 * g_tmp @ P2
            g_P = g_P - 0.5 * P2 @ g_tmp
            g_P = g_P - 0.5 * (P[k - 1] @ g_tmp) @ P[k - 1]
        g_sn = g_sn + g_P
        eye = np.eye(d)
        g_tr = ((-sn @ g_sn + g_wm.transpose(0, 2, 1) @ wm) * eye).sum((1, 2), keepdims=True) * eye
        g_sigma = (g_sn + g_sn.transpose(0, 2, 1) + 2.0 * g_tr) * (-0.5 / m * rTr)
        g_x = wm @ (g_ - g_.mean(-1, keepdims=True)) + g_sigma @ xc
        return g_x.reshape(grad.shape[1], grad.shape[0]).T
