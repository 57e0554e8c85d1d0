"""Float64 NumPy references of MSN, ported from facebookresearch/msn src/losses.py (init_msn_loss,
distributed_sinkhorn), src/deit.py (patch drop) and src/msn_train.py (one_hot label smoothing).

They follow the official arithmetic step by step (probabilities, not log space), never calling
keras_ssl, so that a test can catch a bug in `keras_ssl.losses.prototypes`.
"""

import numpy as np


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _normalize(x):
    # torch.nn.functional.normalize: x / max(||x||, 1e-12), along rows.
    x = _f64(x)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def proto_labels(num_proto, smoothing=0.0):
    """msn_train.one_hot over range(K): off value s / K, on value 1 - s + s / K."""
    off = smoothing / num_proto
    labels = np.full((num_proto, num_proto), off)
    np.fill_diagonal(labels, 1.0 - smoothing + off)
    return labels


def snn(query, supports, labels, tau):
    """Soft nearest neighbours: softmax(normalize(q) @ normalize(s).T / tau) @ labels."""
    return _softmax(_normalize(query) @ _normalize(supports).T / tau) @ labels


def sharpen(p, T):
    sharp = p ** (1.0 / T)
    return sharp / sharp.sum(axis=1, keepdims=True)


def distributed_sinkhorn(Q, num_itr=3):
    """The official single-process Sinkhorn on (B, K) probabilities."""
    Q = _f64(Q).T.copy()
    B, K = Q.shape[1], Q.shape[0]
    Q /= Q.sum()
    for _ in range(num_itr):
        Q /= Q.sum(axis=1, keepdims=True)
        Q /= K
        Q /= Q.sum(axis=0, keepdims=True)
        Q /= B
    Q *= B
    return Q.T


def msn_targets(target_views, prototypes, tau=0.1, T=0.25, use_sinkhorn=True, smoothing=0.0):
    labels = proto_labels(len(prototypes), smoothing)
    targets = sharpen(snn(target_views, prototypes, labels, tau), T)
    return distributed_sinkhorn(targets) if use_sinkhorn else targets


def msn_loss_given_targets(anchor_views, prototypes, targets, tau=0.1, smoothing=0.0):
    """(cross-entropy, me-max) of `anchor_views` `(V * B, D)` against fixed `(B, K)` targets."""
    probs = snn(anchor_views, prototypes, proto_labels(len(prototypes), smoothing), tau)
    num_views = len(probs) // len(targets)
    targets = np.concatenate([targets] * num_views, axis=0)
    loss = np.mean(np.sum(np.log(probs ** (-targets)), axis=1))
    avg_probs = probs.mean(axis=0)
    rloss = -np.sum(np.log(avg_probs ** (-avg_probs))) + np.log(float(len(avg_probs)))
    return loss, rloss


def msn_loss(anchor_views, target_views, prototypes, tau=0.1, T=0.25, use_sinkhorn=True, smoothing=0.0):
    """init_msn_loss(num_views=V, tau, me_max=True)(anchor_views, target_views, prototypes, labels, T,
    use_sinkhorn=...): returns (loss, rloss)."""
    targets = msn_targets(target_views, prototypes, tau, T, use_sinkhorn, smoothing)
    return msn_loss_given_targets(_f64(anchor_views), _f64(prototypes), targets, tau, smoothing)


def numeric_grads(anchor_views, target_views, prototypes, term, step=1e-6, **options):
    """Central differences of loss term `term` (0: cross-entropy, 1: me-max) with respect to the
    anchors and the prototypes, the targets held fixed (torch.no_grad in the official)."""
    anchor_views, prototypes = _f64(anchor_views), _f64(prototypes)
    targets = msn_targets(
        target_views,
        prototypes,
        options.get("tau", 0.1),
        options.get("T", 0.25),
        options.get("use_sinkhorn", True),
        options.get("smoothing", 0.0),
    )
    kw = {"tau": options.get("tau", 0.1), "smoothing": options.get("smoothing", 0.0)}
    out = []
    for which in (0, 1):
        x = (anchor_views, prototypes)[which]
        g = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            values = []
            for sign in (1.0, -1.0):
                moved = [anchor_views.copy(), prototypes.copy()]
                moved[which][i] += sign * step
                values.append(msn_loss_given_targets(moved[0], moved[1], targets, **kw)[term])
            g[i] = (values[0] - values[1]) / (2 * step)
        out.append(g)
    return out


def patch_drop_count(num_patches, patch_drop):
    """deit.forward_features: T_H = int(np.floor(N * (1 - patch_drop)))."""
    return int(np.floor(num_patches * (1.0 - patch_drop)))
