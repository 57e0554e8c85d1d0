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
        >>> seeds = keras_ssl.views.SeedStream(0)
        >>> crop = keras_ssl.views.RandomResizedCrop(8, seed=seeds())
        >>> jitter = keras_ssl.views.color_jitter(0.5, seed=seeds())
        >>> crop.seed != jitter.seed   # one distinct seed per layer
        True
        >>> keras_ssl.views.SeedStream(None)() is None   # no base seed: random
        True
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
