"""The `(images, texts)` training data of the image-text methods (CLIP, SigLIP, SLIP)."""

import keras
import numpy as np

from keras_ssl.data import check_images


def check_pair_data(model, x, y, batch_size):
    """`fit`'s `(x, y, batch_size)` for an image-text `model`, checked, tokenised (`model.tokenize`).

    Arrays `fit(images, texts)` or `fit((images, texts))` drop the last incomplete
    batch; a `tf.data.Dataset` or `PyDataset` yields `(images, texts)` batches.

    Args:
        model: an image-text method (CLIP, SigLIP, SLIP): its `tokenize`,
            `image_shape`, `value_range` and `image_size` are used.
        x, y, batch_size: as given to `fit`.

    Example:
        >>> model = keras_ssl.CLIP(encoder, vocab_size=9, max_length=4, embed_dim=8, text_width=8)
        >>> keras_ssl.text.check_pair_data(model, images, np.ones((8, 4), "int32"), 3)[0][1].shape  # 2 batches of 3
        (6, 4)
    """
    name = type(model).__name__
    if y is None and isinstance(x, (tuple, list)) and len(x) == 2:
        x, y = x
    if isinstance(x, np.ndarray):
        if y is None:
            raise ValueError(f"{name} trains on (images, texts) pairs: call fit(images, texts).")
        check_images(x, channels=model.image_shape[-1], value_range=model.value_range)
        tokens = model.tokenize(y)
        if len(tokens) != len(x):
            raise ValueError(f"got {len(x)} images but {len(tokens)} texts; they must pair up.")
        batch = min(batch_size or 32, len(x))
        if batch < 2:
            raise ValueError(f"{name} needs batches of at least 2 pairs, got batch_size={batch}.")
        keep = len(x) - len(x) % batch
        return (x[:keep], tokens[:keep]), None, batch_size
    if y is not None:
        raise ValueError("pass (images, texts) arrays, or a dataset yielding (images, texts) batches.")

    def check_batch(images):
        check_images(images, model.image_shape[-1], 2, model.value_range, model.image_size)

    spec = getattr(x, "element_spec", None)
    if spec is not None:
        if not (isinstance(spec, tuple) and len(spec) == 2 and hasattr(spec[0], "shape")):
            raise ValueError(f"the tf.data.Dataset must yield (images, token_ids) batches, got {spec}.")
        images, _ = next(iter(x.take(1)))
        check_batch(np.asarray(images))
        return x.map(lambda images, tokens: ((images, tokens),)), None, None
    if isinstance(x, keras.utils.PyDataset):
        check_batch(np.asarray(x[0][0]))
        return _PairBatches(x, model), None, None
    raise TypeError(f"expected (images, texts) arrays, a tf.data.Dataset or a PyDataset, got {type(x).__name__}.")


class _PairBatches(keras.utils.PyDataset):
    """`(images, texts)` batches as `((images, token_ids),)`."""

    def __init__(self, source, model):
        super().__init__()
        self.source, self.model = source, model

    num_batches = property(lambda self: self.source.num_batches)

    def __getitem__(self, index):
        images, texts = self.source[index]
        tokens = self.model.tokenize(texts)
        if len(tokens) != len(images):
            raise ValueError(f"batch {index} has {len(images)} images but {len(tokens)} texts.")
        return ((np.asarray(images), tokens),)

    def on_epoch_end(self):
        getattr(self.source, "on_epoch_end", lambda: None)()
