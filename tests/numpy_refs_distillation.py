"""Float64 NumPy references for iBOT / DINOv2: blockwise masks, patch distillation, KoLeo, Sinkhorn.

Written from the official code, never calling keras_ssl:
- facebookresearch/dinov2 `dinov2/data/masking.py` (MaskingGenerator), `dinov2/data/collate.py`
  (collate_data_and_cast: which images are masked, and how much), `dinov2/loss/ibot_patch_loss.py`
  (iBOTPatchLoss.forward / forward_masked, sinkhorn_knopp_teacher), `dinov2/loss/koleo_loss.py`
  (KoLeoLoss), `dinov2/loss/dino_clstoken_loss.py` (DINOLoss.sinkhorn_knopp_teacher).
- bytedance/ibot `loader.py` (ImageFolderMask.get_pred_ratio and its 'block' mask loop) and
  `main_ibot.py` (iBOTLoss.forward, the patch term).
Random draws use a `np.random.Generator` in place of Python's `random`, in the official order.
"""

import math

import numpy as np
from numpy_refs import numeric_grad  # noqa: F401 (the tests use it from here)


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def _log_softmax(logits):
    logits = _f64(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _randint(rng, low, high):
    """Python's `random.randint(low, high)`: both ends included."""
    return int(rng.integers(low, high + 1))


def block_mask(rng, grid, target, min_num_patches, max_num_patches, min_aspect=0.3, max_aspect=None, stats=None):
    """One `(h, w)` bool mask by the official rejection loop (DINOv2 MaskingGenerator.__call__).

    `target` is `num_masking_patches` (DINOv2, an int) or iBOT's `high = ratio * H * W` (a float);
    `max_num_patches=None` is iBOT's loop (no cap on one block's area), `min_num_patches` is
    DINOv2's 4 or iBOT's `(min(H, W) // 3) ** 2`. Each round makes up to 10 attempts at one
    random block and keeps the first that adds `0 < new <= remaining` patches; a round without
    one ends the loop. `stats` (a dict), when given, gets "attempts" and "blocks".
    """
    height, width = grid
    log_aspect = (math.log(min_aspect), math.log(max_aspect or 1 / min_aspect))
    mask = np.zeros((height, width), dtype=bool)
    count = attempts = blocks = 0
    while count < target:
        max_mask = target - count
        if max_num_patches is not None:
            max_mask = min(max_mask, max_num_patches)
        delta = 0
        for _ in range(10):
            attempts += 1
            area = min_num_patches + (max_mask - min_num_patches) * rng.random()  # random.uniform
            aspect = math.exp(log_aspect[0] + (log_aspect[1] - log_aspect[0]) * rng.random())
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w < width and h < height:
                top = _randint(rng, 0, height - h)
                left = _randint(rng, 0, width - w)
                new = h * w - mask[top : top + h, left : left + w].sum()
                if 0 < new <= max_mask:
                    mask[top : top + h, left : left + w] = True
                    delta = new
            if delta > 0:
                break
        if delta == 0:
            break
        count += delta
        blocks += 1
    if stats is not None:
        stats["attempts"] = attempts
        stats["blocks"] = blocks
    return mask


def dinov2_targets(rng, batch_size, num_patches, mask_ratio=(0.1, 0.5), mask_probability=0.5):
    """Masked-patch targets of DINOv2's collate_data_and_cast, in the batch's (shuffled) order.

    `int(B * p)` images get `int(N * uniform(lin[i], lin[i + 1]))` with
    `lin = linspace(lo, hi, int(B * p) + 1)`; the others 0; then the list is shuffled.
    """
    n_masked = int(batch_size * mask_probability)
    bins = np.linspace(mask_ratio[0], mask_ratio[1], n_masked + 1)
    targets = [int(num_patches * rng.uniform(bins[i], bins[i + 1])) for i in range(n_masked)]
    targets += [0] * (batch_size - n_masked)
    return np.asarray(targets, dtype=np.float64)[rng.permutation(batch_size)]


def collate_upperbound(batch_size, num_patches, mask_ratio=(0.1, 0.5), mask_probability=0.5):
    """collate_data_and_cast's `upperbound`: `sum(int(N * probs[i + 1]))` over the `int(B * p)`
    masked images, `probs = linspace(lo, hi, int(B * p) + 1)` (the rows of its patch buffers)."""
    n_masked = int(batch_size * mask_probability)
    probs = np.linspace(mask_ratio[0], mask_ratio[1], n_masked + 1)
    return sum(int(num_patches * probs[i + 1]) for i in range(n_masked))


def collate_mask_indices(masks):
    """collate's `mask_indices_list` (`masks.flatten().nonzero()`) and `masks_weight`
    (`1 / count(image)` per masked patch, in the same order)."""
    masks = np.asarray(masks, dtype=bool)
    weights = (1.0 / np.maximum(masks.sum(-1), 1.0))[:, None] * np.ones(masks.shape)
    return np.flatnonzero(masks.reshape(-1)), weights[masks]


def ibot_target(rng, num_patches, pred_ratio=(0.0, 0.3), pred_ratio_var=(0.0, 0.2)):
    """iBOT's `high = get_pred_ratio() * H * W` for one crop (loader.py).

    A list of ratios: each `uniform(r - v, r + v)` (or `r` when `v == 0`), then one chosen at
    random. The paper's runs pass `--pred_ratio 0 0.3 --pred_ratio_var 0 0.2`: half the crops
    unmasked, the others a ratio uniform in [0.1, 0.5].
    """
    ratios = [rng.uniform(r - v, r + v) if v > 0 else r for r, v in zip(pred_ratio, pred_ratio_var)]
    return ratios[int(rng.integers(len(ratios)))] * num_patches


def masked_patch_distillation(student_logits, teacher_probs, masks, student_temperature):
    """iBOTLoss's patch term (bytedance/ibot main_ibot.py) = DINOv2 iBOTPatchLoss.forward.

    `ce[b, n] = -sum_k t * log_softmax(s / T)`; per image the sum over its masked patches
    divided by `max(count, 1)`; the mean over images (unmasked images add 0).
    """
    ce = -np.sum(_f64(teacher_probs) * _log_softmax(_f64(student_logits) / student_temperature), axis=-1)
    masks = _f64(masks)
    per_image = np.sum(ce * masks, axis=-1) / np.maximum(masks.sum(axis=-1), 1.0)
    return float(per_image.mean())


def masked_patch_distillation_dinov2_masked(student_logits, teacher_probs, masks, student_temperature):
    """DINOv2's `forward_masked`: the masked patches gathered in a flat list, each weighted by
    `1 / count(its image)` (collate's masks_weight), summed, divided by the number of images."""
    masks = np.asarray(masks, dtype=bool)
    weights = (1.0 / np.maximum(masks.sum(-1), 1.0))[:, None] * np.ones(masks.shape)
    s, t = _f64(student_logits)[masks], _f64(teacher_probs)[masks]
    per_patch = np.sum(t * _log_softmax(s / student_temperature), axis=-1)
    return float(-(per_patch * weights[masks]).sum() / masks.shape[0])


def masked_patch_distillation_grad(student_logits, teacher_probs, masks, student_temperature):
    """Analytic gradient of `masked_patch_distillation` w.r.t. the student logits:
    `w[b, n] * (softmax(s / T) * sum_k t - t) / T` with `w = mask / max(count, 1) / B`."""
    s, t, masks = _f64(student_logits), _f64(teacher_probs), _f64(masks)
    p = np.exp(_log_softmax(s / student_temperature))
    w = masks / np.maximum(masks.sum(-1, keepdims=True), 1.0) / len(s)
    return w[..., None] * (p * t.sum(-1, keepdims=True) - t) / student_temperature


def koleo(features, eps=1e-8):
    """DINOv2 KoLeoLoss.forward: F.normalize (eps), nearest other row by dot product (the diagonal
    filled with -1), `nn.PairwiseDistance(2, eps)` (`||x - y + eps||`), `-mean(log(d + eps))`."""
    x = _f64(features)
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
    dots = x @ x.T
    np.fill_diagonal(dots, -1.0)
    nearest = np.argmax(dots, axis=1)
    distances = np.linalg.norm(x - x[nearest] + eps, axis=-1)
    return float(-np.mean(np.log(distances + eps)))


def sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_iterations=3, num_samples=None):
    """DINOv2's sinkhorn_knopp_teacher on one worker (DINOLoss; iBOTPatchLoss with
    `num_samples = n_masked_patches`). Returns `(B, K)`: each row sums to 1."""
    q = np.exp(_f64(teacher_output) / teacher_temp).T
    k = q.shape[0]
    b = q.shape[1] if num_samples is None else num_samples
    q /= q.sum()
    for _ in range(n_iterations):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    q *= b
    return q.T
