"""Float64 NumPy references of iBOT's and DINOv2's whole losses, written from the official code.

`ibot_loss` follows bytedance/ibot main_ibot.py `iBOTLoss.forward` and `update_center` loop for
loop; `dinov2_loss` follows facebookresearch/dinov2 `SSLMetaArch.forward_backward` (the crop
swap, the loss-term counts, `loss_scales`), `DINOLoss.sinkhorn_knopp_teacher`,
`iBOTPatchLoss.forward_masked` with collate's `masks_weight`, and `KoLeoLoss`. They never call
keras_ssl.
"""

import numpy as np
from numpy_refs_distillation import _log_softmax, koleo, sinkhorn_knopp_teacher


def _softmax(x):
    return np.exp(_log_softmax(x))


def ibot_loss(
    student_cls,
    student_patch,
    teacher_cls,
    teacher_patch,
    masks,
    center,
    center2,
    *,
    temps,
    lambdas=(1, 1),
    momenta=(0.9, 0.9),
):
    """iBOTLoss: student_cls (n_crops, B, K) global crops first; student_patch and teacher_patch
    (2, B, N, K); teacher_cls (2, B, K); masks (2, B, N). temps = (student, teacher, teacher patch).

    Returns (total, loss1, loss2, new center, new center2).
    """
    student_temp, temp, temp2 = temps
    s_cls = [np.asarray(s, np.float64) / student_temp for s in student_cls]
    s_patch = [np.asarray(s, np.float64) / student_temp for s in student_patch]
    t_cls = [_softmax((np.asarray(t, np.float64) - center) / temp) for t in teacher_cls]
    t_patch = [_softmax((np.asarray(t, np.float64) - center2) / temp2) for t in teacher_patch]
    total1 = total2 = 0.0
    n1 = n2 = 0
    for q in range(len(t_cls)):
        for v in range(len(s_cls)):
            if v == q:
                loss2 = np.sum(-t_patch[q] * _log_softmax(s_patch[v]), axis=-1)
                mask = np.asarray(masks[v], np.float64)
                loss2 = np.sum(loss2 * mask, axis=-1) / np.maximum(mask.sum(-1), 1.0)
                total2 += loss2.mean()
                n2 += 1
            else:
                total1 += np.sum(-t_cls[q] * _log_softmax(s_cls[v]), axis=-1).mean()
                n1 += 1
    loss1, loss2 = total1 / n1 * lambdas[0], total2 / n2 * lambdas[1]
    teacher_cls_all = np.concatenate([np.asarray(t, np.float64) for t in teacher_cls])
    teacher_patch_all = np.concatenate([np.asarray(t, np.float64) for t in teacher_patch])
    new_center = center * momenta[0] + teacher_cls_all.mean(0) * (1 - momenta[0])
    new_center2 = center2 * momenta[1] + teacher_patch_all.mean(1).mean(0) * (1 - momenta[1])
    return loss1 + loss2, loss1, loss2, new_center, new_center2


def dinov2_loss(
    student_global_cls,
    student_local_cls,
    student_patch,
    teacher_cls,
    teacher_patch,
    masks,
    backbone_cls,
    *,
    student_temp,
    teacher_temp,
    koleo_weight=0.1,
):
    """SSLMetaArch.forward_backward, Sinkhorn-Knopp centring, shared head, on one process.

    student_global_cls (2, B, K); student_local_cls (L, B, K); student_patch, teacher_patch
    (2, B, N, K); teacher_cls (2, B, K); masks (2, B, N); backbone_cls (2, B, D).
    Returns (total, dino, ibot, koleo) with koleo unweighted (the sum over the two crops).
    """
    n_global, n_local = 2, len(student_local_cls)
    n_local_terms, n_global_terms = max(n_local * n_global, 1), (n_global - 1) * n_global
    # The teacher's crops, chunked and concatenated in reverse so that A meets B.
    teacher = np.concatenate([teacher_cls[1], teacher_cls[0]])
    codes = sinkhorn_knopp_teacher(teacher, teacher_temp).reshape(n_global, -1, teacher.shape[-1])

    def dino(student_list, teacher_list):
        total = 0.0
        for s in student_list:
            lsm = _log_softmax(np.asarray(s, np.float64) / student_temp)
            for t in teacher_list:
                total -= np.sum(t * lsm, axis=-1).mean()
        return total

    local = dino(student_local_cls, list(codes)) / (n_global_terms + n_local_terms) if n_local else 0.0
    global_ = dino([np.concatenate(student_global_cls)], [codes.reshape(-1, codes.shape[-1])]) * 2
    global_ /= n_global_terms + n_local_terms
    # Patches: the masked rows of both crops, in order, with their image's weight.
    flat_masks = np.concatenate(masks).reshape(-1).astype(bool)
    k = teacher_patch.shape[-1]
    t_rows = np.concatenate(teacher_patch).reshape(-1, k)[flat_masks]
    s_rows = np.concatenate(student_patch).reshape(-1, k)[flat_masks]
    t_codes = sinkhorn_knopp_teacher(t_rows, teacher_temp)
    per_image = np.concatenate(masks).sum(-1)
    weights = np.repeat(1.0 / np.maximum(per_image, 1.0), np.concatenate(masks).shape[-1])[flat_masks]
    loss = np.sum(t_codes * _log_softmax(s_rows / student_temp), axis=-1) * weights
    ibot = -loss.sum() / np.concatenate(masks).shape[0] * 2 * (1.0 / n_global)
    koleo_sum = sum(koleo(p) for p in backbone_cls)
    dino_total = local + global_
    return dino_total + ibot + koleo_weight * koleo_sum, dino_total, ibot, koleo_sum
