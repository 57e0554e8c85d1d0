"""Float64 NumPy references for FastSiam, NNBYOL and NNSiam, written from the papers and the
official code, never calling keras_ssl.

- FastSiam: lightly-ai/lightly `examples/pytorch/fastsiam.py` (the loss loop: each view's
  prediction against the mean of the other views' detached projections, NegativeCosineSimilarity,
  divided by the number of views) and Pototzky et al. 2022.
- NNBYOL / NNSiam: vturrisi/solo-learn `solo/methods/nnbyol.py` and `nnsiam.py` (`find_nn`: the
  argmax of the normalised query against the queue; `dequeue_and_enqueue`: the first view's
  normalised target written at the pointer; the losses `byol_loss_func(p1, nn2) + byol_loss_func(p2,
  nn1)` and `simsiam_loss_func(p1, nn2) / 2 + simsiam_loss_func(p2, nn1) / 2`).
"""

import numpy as np


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def negative_cosine(p, z):
    """`-mean_b cos(p_b, z_b)` and its gradient with respect to `p` (none flows into `z`)."""
    p, z = np.asarray(p, np.float64), np.asarray(z, np.float64)
    p_hat, z_hat = unit(p), unit(z)
    cos = np.sum(p_hat * z_hat, axis=1, keepdims=True)
    # d cos / d p = (z_hat - cos p_hat) / |p|
    grad = -(z_hat - cos * p_hat) / np.linalg.norm(p, axis=1, keepdims=True) / len(p)
    return -float(np.mean(cos)), grad


def byol_loss(p, z):
    """`mean_b (2 - 2 cos(p_b, z_b))` and its gradient with respect to `p`."""
    value, grad = negative_cosine(p, z)
    return 2.0 + 2.0 * value, 2.0 * grad


def fastsiam_loss(ps, zs):
    """FastSiam: `1/K sum_k D(p_k, mean_{j != k} z_j)`; returns the loss and its gradients in `ps`."""
    k = len(ps)
    loss, grads = 0.0, []
    for i in range(k):
        target = np.mean([np.asarray(zs[j], np.float64) for j in range(k) if j != i], axis=0)
        value, grad = negative_cosine(ps[i], target)
        loss += value / k
        grads.append(grad / k)
    return loss, grads


def simsiam_loss(p1, p2, z1, z2):
    """SimSiam's symmetric loss `(D(p1, z2) + D(p2, z1)) / 2`."""
    return 0.5 * (negative_cosine(p1, z2)[0] + negative_cosine(p2, z1)[0])


def nearest_neighbour(z, support):
    """solo-learn's `find_nn`: the support row (unit rows) of largest dot with the normalised query."""
    support = np.asarray(support, np.float64)
    return support[np.argmax(unit(z) @ support.T, axis=1)]


def enqueue(queue, pointer, keys):
    """FIFO write of the normalised `keys` at `pointer`, wrapping around; returns `(queue, pointer)`."""
    queue = np.array(queue, np.float64)
    for i, key in enumerate(unit(keys)):
        queue[(pointer + i) % len(queue)] = key
    return queue, (pointer + len(keys)) % len(queue)


def nn_byol_loss(p1, p2, nn1, nn2):
    """NNBYOL: `byol(p1, NN(t2)) + byol(p2, NN(t1))`; returns the loss and its gradients in `p1, p2`."""
    (a, grad_1), (b, grad_2) = byol_loss(p1, nn2), byol_loss(p2, nn1)
    return a + b, [grad_1, grad_2]


def nn_siam_loss(p1, p2, nn1, nn2):
    """NNSiam: `(D(p1, NN(z2)) + D(p2, NN(z1))) / 2`; returns the loss and its gradients in `p1, p2`."""
    (a, grad_1), (b, grad_2) = negative_cosine(p1, nn2), negative_cosine(p2, nn1)
    return 0.5 * (a + b), [0.5 * grad_1, 0.5 * grad_2]
