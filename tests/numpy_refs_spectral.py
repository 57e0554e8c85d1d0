"""Float64 NumPy references of MMCR's and W-MSE's losses, written from the official code.

Never calls keras_ssl. MMCR: ThomasYerxa/mmcr `mmcr/cifar_stl/loss_mmcr.py` (`MMCR_Loss.forward`).
W-MSE: htdt/self-supervised `methods/whitening.py` (`Whitening2d.forward`, training mode without
running statistics) and `methods/w_mse.py` (`WMSE.forward`) with `norm_mse_loss`.
"""

import numpy as np


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _normalize(x):
    # torch.nn.functional.normalize: x / max(||x||, 1e-12)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def mmcr_loss(z, lmbda=0.0):
    """`MMCR_Loss.forward` on `z` of shape (B, K, D) (the official `(B N) C` rows, image-major).

    The official code normalises each row, rearranges to `(B, C, N)`, takes the
    centroid as the mean over the N views, and returns
    `lmbda * sum_b svdvals(z_b).sum() / B - svdvals(centroids).sum()`.
    """
    z = _normalize(_f64(z))
    local = np.transpose(z, (0, 2, 1))  # (B, C, N)
    centroids = local.mean(axis=-1)
    global_nuc = np.linalg.svd(centroids, compute_uv=False).sum()
    local_nuc = sum(np.linalg.svd(m, compute_uv=False).sum() for m in local) if lmbda else 0.0
    return float(lmbda * local_nuc / len(z) - global_nuc)


def whiten(x, eps=0.0):
    """`Whitening2d.forward` in training mode: centred rows times `inv_sqrt^T`, `inv_sqrt = L^{-1}`."""
    x = _f64(x)
    xn = x - x.mean(axis=0, keepdims=True)
    cov = xn.T @ xn / (len(x) - 1)
    eye = np.eye(x.shape[1])
    shrunk = (1 - eps) * cov + eps * eye
    inv_sqrt = np.linalg.solve(np.linalg.cholesky(shrunk), eye)  # triangular_solve(eye, L, upper=False)
    # conv2d with a (D, D, 1, 1) kernel: out[n, i] = sum_j inv_sqrt[i, j] xn[n, j]
    return xn @ inv_sqrt.T


def norm_mse(x0, x1):
    """The official `norm_mse_loss`: `2 - 2 * mean(cos)`."""
    return 2 - 2 * np.mean(np.sum(_normalize(_f64(x0)) * _normalize(_f64(x1)), axis=-1))


def wmse_loss(views, w_size, permutations=None, eps=0.0):
    """`WMSE.forward` with the given row orders (each the official `torch.randperm(bs)`)."""
    h = [_f64(v) for v in views]
    bs = len(h[0])
    permutations = [np.arange(bs)] if permutations is None else permutations
    loss = 0.0
    for perm in permutations:
        z = [np.empty_like(v) for v in h]
        for idx in np.asarray(perm).reshape(-1, w_size):
            for i in range(len(h)):
                z[i][idx] = whiten(h[i][idx], eps)
        for i in range(len(h) - 1):
            for j in range(i + 1, len(h)):
                loss += norm_mse(z[i], z[j])
    return float(loss / (len(permutations) * sum(range(len(h)))))


def numeric_grads(fn, *arrays, step=1e-6):
    """Central-difference gradients of the scalar `fn(*arrays)` with respect to each array, in float64."""
    arrays = [_f64(a).copy() for a in arrays]
    out = []
    for a in arrays:
        g = np.zeros_like(a)
        for index in np.ndindex(a.shape):
            keep = a[index]
            a[index] = keep + step
            up = fn(*arrays)
            a[index] = keep - step
            down = fn(*arrays)
            a[index] = keep
            g[index] = (up - down) / (2 * step)
        out.append(g)
    return out
