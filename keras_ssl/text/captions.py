"""Captions from CIFAR-10 labels, with varied templates and synonyms, for the image-text demo."""

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_SYNONYMS = {
    "airplane": ("airplane", "plane", "aircraft", "jet", "airliner"),
    "automobile": ("automobile", "car", "sedan", "vehicle", "auto"),
    "bird": ("bird", "sparrow", "songbird", "finch"),
    "cat": ("cat", "kitten", "kitty", "house cat"),
    "deer": ("deer", "fawn", "stag", "doe"),
    "dog": ("dog", "puppy", "hound", "pup"),
    "frog": ("frog", "toad", "tree frog", "bullfrog"),
    "horse": ("horse", "pony", "stallion", "mare"),
    "ship": ("ship", "boat", "vessel", "cargo ship"),
    "truck": ("truck", "lorry", "pickup truck", "dump truck"),
}
TRAIN_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of the {}.",
    "a blurry photo of a {}.",
    "a small {} in the picture.",
    "a close-up photo of the {}.",
    "there is a {} here.",
    "a low resolution photo of a {}.",
    "the {} in this photo.",
    "a cropped photo of the {}.",
)
#: zero-shot prompts: no training caption uses these templates
EVAL_TEMPLATES = ("this is an image of a {}.", "a photo showing the {}.", "a {} is in this picture.")


def cifar10_captions(labels, seed=0, templates=TRAIN_TEMPLATES, synonyms=CIFAR10_SYNONYMS):
    """One caption per label: a random template filled with a random synonym.

    Args:
        labels: int labels `(N,)` in 0..9.
        seed: seed of the random choices.
        templates: format strings with one `{}`.
        synonyms: class name -> tuple of words for it.

    Returns:
        list of `N` captions.

    Example:
        >>> from keras_ssl.text import cifar10_captions
        >>> cifar10_captions([3, 5], seed=0)
        ['the kitty in this photo.', 'a close-up photo of the puppy.']
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise ValueError(f"CIFAR-10 labels must lie in 0..9, got [{labels.min()}, {labels.max()}].")
    rng = np.random.default_rng(seed)
    words = [synonyms[c] for c in CIFAR10_CLASSES]
    return [templates[rng.integers(len(templates))].format(words[y][rng.integers(len(words[y]))]) for y in labels]
