"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023), chunked and, on JAX devices, passed round a ring."""

import functools

import keras
from keras import ops

from keras_ssl.backend.replication import ring_sum
from keras_ssl.losses.common import _check_batch, _check_rank, l2_normalize


def siglip(image_embeddings, text_embeddings, logit_scale, logit_bias, chunk_size=None):
    """SigLIP's sigmoid loss; pair `i` is `(image[i], text[i])`.

    `-(1/B) sum_i sum_j log sigmoid(z_ij (t <x_i, y_j> + b))` with `z_ij = 1`
    for `i == j` and `-1` elsewhere, over L2-normalised rows (the paper's
    Algorithm 1; big_vision's `siglip.py`). Each image-text pair is its own
    binary problem: no softmax normalises over the batch, so the texts can
    be visited in chunks of `chunk_size` (memory `B x chunk_size`; each
    chunk is recomputed in the backward pass) and, on JAX under
    `keras_ssl.distribute.data_parallel()`, device by device round a ring
    (`ring_sum`: each device sees its images against its own texts, then
    against each other device's texts in turn, never all of them at once).
    Under TensorFlow's `MirroredStrategy` it runs on the texts `SSLModel`
    gathered (chunked when `chunk_size` is set). The value is the same in
    every case.

    Args:
        image_embeddings: `(B, D)` image embeddings (L2-normalised inside).
        text_embeddings: `(B, D)` text embeddings (L2-normalised inside).
        logit_scale: scalar temperature `t` (already exponentiated).
        logit_bias: scalar bias `b`.
        chunk_size: texts per chunk; `None` (or a batch size unknown when
            traced) computes the `B x B` logits at once.

    Returns:
        Scalar float32 loss.

    Example:
        >>> from keras_ssl.losses.sigmoid import siglip
        >>> rng = np.random.default_rng(0)
        >>> image_embeddings, text_embeddings = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
        >>> round(float(siglip(image_embeddings, text_embeddings, 10.0, -10.0)), 3)   # the paper's initial t, b
        9.933
        >>> round(float(siglip(image_embeddings, text_embeddings, 10.0, -10.0, chunk_size=3)), 3)
        9.933
    """
    if chunk_size is not None and not int(chunk_size) >= 1:
        raise ValueError(f"`chunk_size` must be a positive integer or None, got {chunk_size}.")
    _check_rank("image_embeddings", image_embeddings, 2)
    _check_rank("text_embeddings", text_embeddings, 2)
    if ops.shape(image_embeddings)[0] != ops.shape(text_embeddings)[0]:
        raise ValueError(
            f"images and texts must pair up, got shapes {ops.shape(image_embeddings)} and {ops.shape(text_embeddings)}."
        )
    _check_batch(image_embeddings, 1)
    image, text = l2_normalize(image_embeddings), l2_normalize(text_embeddings)
    scale, bias = ops.cast(logit_scale, "float32"), ops.cast(logit_bias, "float32")
    block = functools.partial(_block_log_likelihood, chunk_size=None if chunk_size is None else int(chunk_size))
    return -ring_sum(block, image, text, scale, bias) / ops.cast(ops.shape(image)[0], "float32")


def _block_log_likelihood(image, text, own, scale, bias, chunk_size):
    """Sum of `log sigmoid(z_ij (t <x_i, y_j> + b))` of a block of images against a block of texts."""
    count = text.shape[0]
    if chunk_size is None or count is None or chunk_size >= count:
        return _chunk(image, text, scale, bias, 0 if own else None)
    # A static loop: every chunk has a static shape (the last may be shorter);
    # remat keeps only the chunk's inputs for the backward pass, not its logits.
    total = 0.0
    for start in range(0, count, chunk_size):
        offset = start if own else None
        chunk = keras.remat(functools.partial(_chunk, offset=offset))
        total = total + chunk(image, text[start : start + chunk_size], scale, bias)
    return total


def _chunk(image, text, scale, bias, offset):
    """`offset`: text column `j` pairs with image row `j + offset`; None: the chunk holds no pair."""
    logits = scale * ops.matmul(image, ops.transpose(text)) + bias
    if offset is None:
        return ops.sum(ops.log_sigmoid(-logits))
    rows = ops.expand_dims(ops.arange(ops.shape(image)[0]), 1)
    columns = ops.expand_dims(ops.arange(ops.shape(text)[0]) + offset, 0)
    signs = ops.where(rows == columns, 1.0, -1.0)
    return ops.sum(ops.log_sigmoid(signs * logits))
