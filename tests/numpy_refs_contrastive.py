"""Independent float64 NumPy references of DCL / DCLW (Yeh et al. 2022) and SupCon (Khosla et al. 2020).

Written from the papers' equations and the official code, never calling
`keras_ssl`: loops over anchors, one term at a time, so that they read like
the equations rather than like the vectorised losses they check.

- DCL: "Decoupled Contrastive Learning", eq. 6 (one log over the negatives of
  both views, as raminnakhli/Decoupled-Contrastive-Learning `loss/dcl.py`,
  the implementation lightly's `DCLLoss` cites), DCLW's negative von
  Mises-Fisher weight `w_i = 2 - N softmax_i(<z1_i, z2_i> / sigma)` (same file
  and lightly's `negative_mises_fisher_weights`, which detaches it).
- SupCon: HobbitLong/SupContrast `losses.py`, `SupConLoss.forward` with
  `contrast_mode='all'` and features `[bsz, 2, D]`, rows L2-normalised first
  (the official model normalises its head's output).
"""

import numpy as np
from numpy_refs import numeric_grad  # noqa: F401 (the tests use it from here)


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _unit_rows(x):
    x = _f64(x)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _logsumexp(values):
    values = _f64(values)
    top = values.max()
    return top + np.log(np.exp(values - top).sum())


def von_mises_weights(a, b, sigma):
    """DCLW's `w_i = 2 - exp(<a_i, b_i>/sigma) / mean_j exp(<a_j, b_j>/sigma)` on unit rows."""
    cosines = np.sum(_unit_rows(a) * _unit_rows(b), axis=1) / sigma
    e = np.exp(cosines - cosines.max())
    return 2.0 - e / e.mean()


def dcl(z1, z2, temperature, weights=None):
    """DCL (eq. 6): view k of image i: `-w_i <z_i^k, z_i^u>/T + log sum_{l, j != i} exp(<z_i^k, z_j^l>/T)`.

    The mean over the 2N (image, view) anchors. `weights` (N,) are held fixed
    (DCLW's are not differentiated), None means 1.
    """
    z1, z2 = _unit_rows(z1), _unit_rows(z2)
    n = len(z1)
    w = np.ones(n) if weights is None else _f64(weights)
    total = 0.0
    for anchor_view, other_view in ((z1, z2), (z2, z1)):
        for i in range(n):
            anchor = anchor_view[i]
            negatives = [anchor @ view[j] / temperature for view in (z1, z2) for j in range(n) if j != i]
            total += -w[i] * (anchor @ other_view[i]) / temperature + _logsumexp(negatives)
    return total / (2 * n)


def decoupled_info_nce(query, keys, temperature, negatives=None, in_batch_negatives=False, weights=None):
    """InfoNCE with the positive left out of the denominator (DCL's decoupling, MoCo's form).

    `-w_i q_i.k_i / T + log sum_neg exp(q_i.n / T)`, the negatives `n` being the
    queue (MoCo v2's `[q.k+, q.queue]`) and, with `in_batch_negatives`, the
    other keys `k_j, j != i`.
    """
    q, k = _unit_rows(query), _unit_rows(keys)
    queue = np.zeros((0, q.shape[1])) if negatives is None else _unit_rows(negatives)
    w = np.ones(len(q)) if weights is None else _f64(weights)
    terms = []
    for i in range(len(q)):
        others = [k[j] for j in range(len(k)) if j != i] if in_batch_negatives else []
        candidates = np.concatenate([np.reshape(others, (-1, q.shape[1])), queue])
        terms.append(-w[i] * (q[i] @ k[i]) / temperature + _logsumexp(candidates @ q[i] / temperature))
    return float(np.mean(terms))


def info_nce_queue(query, keys, temperature, negatives):
    """MoCo v2's InfoNCE: cross-entropy of `[q.k+, q.queue] / T` with label 0."""
    q, k, queue = _unit_rows(query), _unit_rows(keys), _unit_rows(negatives)
    terms = []
    for i in range(len(q)):
        logits = np.concatenate([[q[i] @ k[i]], queue @ q[i]]) / temperature
        terms.append(-(logits[0] - _logsumexp(logits)))
    return float(np.mean(terms))


def supcon(z1, z2, labels, temperature, base_temperature=None):
    """SupConLoss (contrast_mode 'all'), the paper's `L^sup_out` (eq. 2) times `T / base_T`.

    Anchor a (of the 2N views) has positives P(a): the other views whose
    image has a's label, and its own twin; label -1 (unlabelled) matches no
    one, so its only positive is its twin. `-1/|P(a)| sum_p log(exp(s_ap/T) /
    sum_{b != a} exp(s_ab/T))`, averaged over anchors.
    """
    z = np.concatenate([_unit_rows(z1), _unit_rows(z2)])
    n = len(z1)
    image = np.concatenate([np.arange(n), np.arange(n)])
    label = np.concatenate([labels, labels])
    sim = z @ z.T / temperature
    scale = 1.0 if base_temperature is None else temperature / base_temperature
    total = 0.0
    for a in range(2 * n):
        others = [b for b in range(2 * n) if b != a]
        denominator = _logsumexp(sim[a, others])
        positives = [b for b in others if image[b] == image[a] or (label[a] >= 0 and label[b] == label[a])]
        total += -scale * np.mean([sim[a, p] - denominator for p in positives])
    return total / (2 * n)
