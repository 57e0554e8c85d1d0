"""Float64 NumPy references for DeepCluster-v2, written from facebookresearch/swav main_deepclusterv2.py
(`cluster_memory`, the loss in `train`, the memory-bank update) without calling keras_ssl."""

import numpy as np


def normalize(x):
    """torch.nn.functional.normalize(x, dim=1, p=2): rows over max(norm, 1e-12)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kmeans_official(bank, centroids, iterations):
    """`cluster_memory`'s loop for one head on one process: E step, then (but after the last) M step.

    Empty clusters keep their centroid (`centroids[mask] = ...` with `mask = counts > 0`),
    then every centroid is L2-normalised.
    """
    bank, centroids = np.asarray(bank, np.float64), np.array(centroids, np.float64)
    k = len(centroids)
    for n_iter in range(iterations + 1):
        assignments = (bank @ centroids.T).argmax(axis=1)
        if n_iter == iterations:
            break
        counts = np.zeros(k, np.int64)
        sums = np.zeros_like(centroids)
        for c in range(k):
            members = np.nonzero(assignments == c)[0]
            if len(members):
                sums[c] = bank[members].sum(axis=0)
                counts[c] = len(members)
        mask = counts > 0
        centroids[mask] = sums[mask] / counts[mask][:, None]
        centroids = normalize(centroids)
    return centroids, assignments


def deepcluster_loss(scores, assignments, temperature):
    """The loss of `train`: per head, `CrossEntropyLoss(ignore_index)` of every crop's scores / T
    against the sample's assignment repeated over the crops (mean over the kept rows); mean over heads.

    Our "no assignment" is -1 (official: -100); a head whose rows are all ignored counts 0
    (torch would give nan). Returns `(loss, gradients)`, the gradients shaped like `scores`.
    """
    total, gradients = 0.0, []
    for h, crops in enumerate(scores):
        logits = np.concatenate([np.asarray(s, np.float64) for s in crops], axis=0) / temperature
        targets = np.tile(np.asarray(assignments[h]), len(crops))
        keep = targets >= 0
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        rows = np.arange(len(targets))
        nll = -np.log(p[rows, np.maximum(targets, 0)])
        n = keep.sum()
        total += nll[keep].sum() / n if n else 0.0
        # d mean-CE / d scores = (softmax - onehot) / T / n on kept rows, over the number of heads.
        g = p.copy()
        g[rows, np.maximum(targets, 0)] -= 1.0
        g = np.where(keep[:, None], g, 0.0) / temperature / max(n, 1) / len(scores)
        gradients.append(np.split(g, len(crops), axis=0))
    return total / len(scores), gradients


def bank_update(bank, indices, z1, z2):
    """The memory-bank write of `train`, keyed by sample index: crop c's embedding into bank c."""
    bank = np.array(bank, np.float64)
    bank[0, indices] = z1
    bank[1, indices] = z2
    return bank
