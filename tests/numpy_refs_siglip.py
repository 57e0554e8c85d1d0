"""Float64 NumPy references of SigLIP's sigmoid loss and its gradients, never calling keras_ssl.

Written from big_vision's `trainers/proj/image_text/siglip.py` (`loss_fn`):
`logits = zimg @ ztxt.T * t + b`, labels `2 * eye - 1`, `nll = -sum_j log_sigmoid(labels * logits)`,
loss `mean_i nll`, with `zimg`, `ztxt` the L2-normalised embeddings (the two-towers model
normalises them). The gradients are derived by hand from that formula.
"""

import numpy as np


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _sigmoid(x):
    return np.exp(_log_sigmoid(x))


def siglip(image, text, t, b):
    """Loss of `(B, D)` image and text embeddings at temperature `t` and bias `b`."""
    x, y = np.asarray(image, np.float64), np.asarray(text, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    logits = x @ y.T * t + b
    labels = 2.0 * np.eye(len(x)) - 1.0
    return float(np.mean(-np.sum(_log_sigmoid(labels * logits), axis=-1)))


def siglip_grads(image, text, t, b):
    """`(d/d image, d/d text, d/d t, d/d b)` of `siglip`.

    With `l_ij = t <x_i, y_j> + b`, `z_ij = +-1`: `dL/dl_ij = -z_ij sigmoid(-z_ij l_ij) / B`;
    through `x = u / |u|`: `dL/du = (g - x <x, g>) / |u|`.
    """
    u, v = np.asarray(image, np.float64), np.asarray(text, np.float64)
    nu, nv = np.linalg.norm(u, axis=1, keepdims=True), np.linalg.norm(v, axis=1, keepdims=True)
    x, y = u / nu, v / nv
    cos = x @ y.T
    labels = 2.0 * np.eye(len(x)) - 1.0
    g = -labels * _sigmoid(-labels * (t * cos + b)) / len(x)
    gx, gy = t * g @ y, t * g.T @ x
    du = (gx - x * np.sum(x * gx, axis=1, keepdims=True)) / nu
    dv = (gy - y * np.sum(y * gy, axis=1, keepdims=True)) / nv
    return du, dv, float(np.sum(g * cos)), float(np.sum(g))
