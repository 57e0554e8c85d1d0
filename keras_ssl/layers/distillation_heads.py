"""The patch side of the DINO family's heads (iBOT, DINOv2): the masked patches gathered with static
shapes, and the running centres.

DINOv2 (`SSLMetaArch.forward_backward`) runs its heads on the masked patch tokens only, copied
into a buffer of collate's static `upperbound` rows; only those enter the patch loss, so the
loss is the one of a head on every patch. `masked_rows` picks the same rows with static shapes
(a top-k by position, no boolean indexing), so the selection compiles on every backend.
"""

from keras import ops


def masked_rows(masks, max_rows):
    """The masked patches' rows in the flattened `(B * N)` patches, padded to `max_rows`, and their weights.

    Args:
        masks: `(B, N)`, 1 where a patch is masked.
        max_rows: how many rows to return, at least the number of masked patches (a bound that
            depends on shapes only, e.g. `BlockMasking.max_masked(B)`) and at most `B * N`; an
            int, or a scalar tensor on TensorFlow where the batch is not static.

    Returns:
        `(rows, weights)`: `(max_rows,)` int indices, the masked patches first in raster order and
        then unmasked ones as padding; `(max_rows,)` float32 weights, `1 / (masked patches of the
        row's image)` on masked rows (DINOv2 collate's `masks_weight`) and 0 on padding.

    Example:
        >>> from keras_ssl.layers.distillation_heads import masked_rows
        >>> masks = np.array([[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
        >>> rows, weights = masked_rows(masks, 4)
        >>> ops.convert_to_numpy(rows)[:3].tolist(), ops.convert_to_numpy(weights).tolist()
        ([1, 2, 8], [0.5, 0.5, 1.0, 0.0])
    """
    masks = ops.cast(masks, "float32")
    weights = masks / ops.maximum(ops.sum(masks, axis=1, keepdims=True), 1.0)
    flat = ops.reshape(masks, (-1,))
    count = ops.shape(flat)[0]
    # Masked rows score their reverse position (distinct, > 0), the others 0: the top k are the
    # masked rows in order, then padding. Exact in float32 up to 2 ** 24 patches.
    scores = flat * ops.cast(count - ops.arange(count), "float32")
    rows = ops.top_k(scores, max_rows)[1]
    return rows, ops.take(ops.reshape(weights, (-1,)), rows, axis=0)


def take_rows(tokens, rows):
    """`(M, D)`: the `rows` of the `(B, N, D)` tokens flattened to `(B * N, D)` (rows from `masked_rows`).

    Example:
        >>> from keras_ssl.layers.distillation_heads import take_rows
        >>> tokens = np.arange(12.0).reshape(2, 3, 2)
        >>> ops.convert_to_numpy(take_rows(tokens, np.array([4, 0]))).tolist()
        [[8.0, 9.0], [0.0, 1.0]]
    """
    tokens = ops.convert_to_tensor(tokens)
    return ops.take(ops.reshape(tokens, (-1, tokens.shape[-1])), rows, axis=0)


def update_centre(centre, batch_mean, momentum):
    """DINO's and iBOT's running centre: `centre <- momentum * centre + (1 - momentum) * batch_mean`, float32.

    Args:
        centre: `(K,)` non-trainable variable.
        batch_mean: `(K,)` the teacher outputs' mean over the global batch.
        momentum: in [0, 1).

    Example:
        >>> from keras_ssl.layers.distillation_heads import update_centre
        >>> centre = keras.Variable(np.zeros(2, "float32"), trainable=False)
        >>> update_centre(centre, np.array([1.0, 2.0]), 0.9)
        >>> [round(float(v), 3) for v in ops.convert_to_numpy(centre)]
        [0.1, 0.2]
    """
    previous = ops.convert_to_tensor(centre)
    centre.assign(momentum * previous + (1.0 - momentum) * ops.cast(batch_mean, "float32"))
