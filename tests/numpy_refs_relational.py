"""Float64 NumPy references for ReSSL, written from the official code (KyleZheng1997/ReSSL).

ressl.py, `train`: `loss = -sum(softmax(logits_k / t) * log_softmax(logits_q / 0.1), dim=1).mean()`
network/ressl.py, `ReSSL.forward`: `logits_q = q @ queue`, `logits_k = k @ queue` with the queue
read before `_dequeue_and_enqueue(k)`; `BackBone.forward` returns L2-normalised embeddings.
No keras_ssl code is used here.
"""

import numpy as np


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ressl_loss(student, teacher, queue, student_temperature=0.1, teacher_temperature=0.04):
    """The loss and its gradient with respect to `student` (the teacher and the queue take none)."""
    s, t, queue = np.asarray(student, np.float64), unit(teacher), unit(queue)
    norm = np.linalg.norm(s, axis=1, keepdims=True)
    u = s / norm
    target = softmax(t @ queue.T / teacher_temperature)
    student_prob = softmax(u @ queue.T / student_temperature)
    batch = len(s)
    loss = -np.mean(np.sum(target * np.log(student_prob), axis=1))
    # d loss / d logits_s = (p_s - target) / B; logits_s = u Q^T / tau_s; u = s / |s|.
    grad_u = (student_prob - target) @ queue / (student_temperature * batch)
    grad_s = (grad_u - u * np.sum(grad_u * u, axis=1, keepdims=True)) / norm
    return loss, grad_s


def enqueue(queue, pointer, keys):
    """The official `_dequeue_and_enqueue`, wrapping at the end: returns the new queue and pointer."""
    queue = np.array(queue, np.float64)
    for i, key in enumerate(unit(keys)):
        queue[(pointer + i) % len(queue)] = key
    return queue, (pointer + len(keys)) % len(queue)
