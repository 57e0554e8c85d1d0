"""NumPy transcriptions of the official codes' schedulers (DINO/iBOT/DINOv2, I-JEPA/MSN, SimMIM), for the schedule tests."""

import math

import numpy as np


def dino_cosine_scheduler(base_value, final_value, epochs, niter_per_ep):
    """DINO's (and iBOT's) `utils.cosine_scheduler` without warm-up, in NumPy; DINOv2's `CosineScheduler` too."""
    iters = np.arange(epochs * niter_per_ep)
    return final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))


def ijepa_cosine_wd_schedule(ref_wd, final_wd, t_max, steps):
    """I-JEPA's and MSN's `CosineWDSchedule`: each `step()`, called before the update, returns the decay it uses."""
    values = []
    for count in range(1, steps + 1):
        new_wd = final_wd + (ref_wd - final_wd) * 0.5 * (1.0 + math.cos(math.pi * count / t_max))
        values.append(max(final_wd, new_wd) if final_wd <= ref_wd else min(final_wd, new_wd))
    return np.array(values)


def official_cosine_scheduler(base, final, total, warmup, start_warmup=0.0):
    """DINO's and iBOT's `cosine_scheduler` (DINOv2's `CosineScheduler`): linspace warm-up, then the cosine."""
    iters = np.arange(total - warmup)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate([np.linspace(start_warmup, base, warmup), cosine])


def official_warmup_cosine_stepped(start_lr, ref_lr, final_lr, warmup, t_max, updates):
    """I-JEPA's and MSN's `WarmupCosineSchedule`, stepped once before each update: the rate each update uses."""
    rates, step = [], 0
    for _ in range(updates):
        step += 1
        if step < warmup:
            rates.append(start_lr + step / max(1, warmup) * (ref_lr - start_lr))
        else:
            progress = (step - warmup) / max(1, t_max - warmup)
            rates.append(max(final_lr, final_lr + (ref_lr - final_lr) * 0.5 * (1 + math.cos(math.pi * progress))))
    return np.array(rates)


def simmim_multistep_rates(base_lr, warmup_lr, warmup_t, milestones, gamma, updates):
    """SimMIM's `MultiStepLRScheduler` as main_simmim.py drives it: the rate each of `updates` updates uses.

    The constructor sets every group to `warmup_lr` (`update_groups`); after the
    update at global index `i`, `step_update(i)` sets the next one's rate to `_get_lr(i)`.
    """
    from bisect import bisect_right

    def get_lr(t):
        if t < warmup_t:
            return warmup_lr + t * (base_lr - warmup_lr) / warmup_t
        return base_lr * gamma ** bisect_right(milestones, t)

    lr, rates = (warmup_lr if warmup_t else base_lr), []
    for i in range(updates):
        rates.append(lr)  # optimizer.step() with the current rate
        lr = get_lr(i)  # lr_scheduler.step_update(epoch * num_steps + idx)
    return np.array(rates)
