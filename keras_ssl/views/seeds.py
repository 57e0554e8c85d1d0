"""Seed streams: one distinct seed per random layer, all derived from one model seed."""

import numpy as np


class SeedStream:
    """Distinct integer seeds derived from one base seed, one per call.

    Two Keras random layers given the same integer seed draw the same
    numbers (flip and grayscale perfectly correlated, measured), so every
    random layer gets its own seed from a stream. Seeds are hashed from
    `(base, count)` with NumPy's `SeedSequence`, so streams nested inside
    each other (a model's stream seeding an augmenter's) never collide.

    Args:
        seed: base seed; `None` makes every call return `None` (random).

    Example:
        >>> seeds = SeedStream(0)
        >>> crop = RandomResizedCrop(32, seed=seeds())
        >>> jitter = color_jitter(0.5, seed=seeds())
    """

    def __init__(self, seed=None):
        self.seed = None if seed is None else int(seed)
        self.count = 0

    def __call__(self):
        if self.seed is None:
            return None
        self.count += 1
        state = np.random.SeedSequence([self.seed, self.count]).generate_state(1)[0]
        return int(state >> 1)  # non-negative int32
