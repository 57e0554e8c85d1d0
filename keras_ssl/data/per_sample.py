"""Per-sample inputs that travel with the images: class labels (SupCon) or dataset indices (DeepCluster v2).

A method declares what it needs (`needs_labels` or `needs_indices`, see
`engine.contract.MethodContract`) and `fit` gives it, from every source, the
one model input `(images, per_sample)`:

- NumPy images: labels are `fit`'s `y`; indices are the images' rows.
- any other source (`tf.data`, `PyDataset` such as `ImageFiles`, torch
  `DataLoader`, generator, list of batches) yields `(images, labels)` or
  `(images, indices)` batches; `ImageFiles(..., with_labels=True)` or
  `with_indices=True` makes them from files.

`PerSample` checks the per-sample part of every batch read on the Python side
(the first batch of a `tf.data.Dataset`) and packs it, so a bad label or index
fails with a message naming it, before a step or at the batch that has it.
"""

import numpy as np

UNLABELLED = -1


def check_labels(labels, count, owner="SupCon"):
    """Integer class labels as int32 `(count,)`, -1 for an unlabelled image; a clear ValueError otherwise.

    Args:
        labels: the labels of `count` images.
        count: how many images they go with.
        owner: the method named in the messages.

    Example:
        >>> from keras_ssl.data.per_sample import check_labels
        >>> check_labels([3, -1, 0], 3).tolist()
        [3, -1, 0]
        >>> check_labels([0.5, 1.0], 2)
        Traceback (most recent call last):
        ...
        ValueError: SupCon labels must be integers (class indices, -1 for unlabelled), got float64.
    """
    if labels is None:
        raise ValueError(f"{owner} trains on labelled images: call fit(images, labels) (labels -1: unlabelled).")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{owner} labels must be integers (class indices, -1 for unlabelled), got {labels.dtype}.")
    if labels.ndim != 1:
        raise ValueError(f"{owner} labels must have shape (N,) (class indices, not one-hot), got {labels.shape}.")
    if len(labels) != count:
        raise ValueError(f"got {count} images but {len(labels)} labels; they must pair up.")
    if labels.size and labels.min() < UNLABELLED:
        raise ValueError(f"{owner} labels must be >= -1 (-1: unlabelled), got {labels.min()}.")
    return labels.astype("int32")


def check_indices(indices, count, num_samples=None, owner="this method"):
    """Dataset indices as int32 `(count,)`, each in `[0, num_samples)`; a clear ValueError otherwise.

    Args:
        indices: each image's position in the dataset (None: the batch has none).
        count: how many images they go with.
        num_samples: indices must be below it (None: unchecked).
        owner: the method named in the message.

    Example:
        >>> from keras_ssl.data.per_sample import check_indices
        >>> check_indices(np.arange(4, 8), 4, num_samples=8).tolist()
        [4, 5, 6, 7]
        >>> check_indices(np.arange(4, 8), 4, num_samples=6, owner="DeepClusterV2")
        Traceback (most recent call last):
        ...
        ValueError: DeepClusterV2 keeps state per sample, so every batch must be (images, indices) ... range over [4, 7]. ...
    """
    problem = None
    if indices is None:
        problem = "its batches have no second element"
    else:
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu" or indices.shape != (count,):
            problem = f"the second element of a batch has dtype {indices.dtype} and shape {indices.shape}"
        elif count and (indices.min() < 0 or (num_samples is not None and indices.max() >= num_samples)):
            problem = f"its indices range over [{indices.min()}, {indices.max()}]"
    if problem:
        bound = f" below num_samples={num_samples}" if num_samples is not None else ""
        raise ValueError(
            f"{owner} keeps state per sample, so every batch must be (images, indices) with `indices` the int "
            f"positions (B,) of the images in the dataset (0 <= index{bound}), the same for an image every "
            f"epoch; {problem}. NumPy arrays get their indices from `fit`; ImageFiles gives them with "
            "with_indices=True; for a tf.data.Dataset use `tf.data.Dataset.zip((images, "
            "tf.data.Dataset.range(n)))` before batching."
        )
    return indices.astype("int32")


class PerSample:
    """What a method needs per sample (`"labels"` or `"indices"`), checked and packed batch by batch.

    Called on a batch `(images, per_sample)` it returns `((images, per_sample),)`:
    one model input, as `ssl_forward(views, per_sample, training)` takes it. It
    holds only plain values, so torch `DataLoader` workers can run it.

    Args:
        kind: `"labels"` or `"indices"`.
        owner: the method named in error messages.
        num_samples: for indices, their bound (None: unchecked).

    Example:
        >>> from keras_ssl.data.per_sample import PerSample
        >>> (images, indices), = PerSample("indices", num_samples=64)((x_train[:4], np.arange(4)))
        >>> images.shape, indices.tolist()
        ((4, 16, 16, 3), [0, 1, 2, 3])
        >>> PerSample.of(keras_ssl.SupCon(encoder)).kind
        'labels'
    """

    def __init__(self, kind, owner="this method", num_samples=None):
        if kind not in ("labels", "indices"):
            raise ValueError(f"`kind` must be 'labels' or 'indices', got {kind!r}.")
        self.kind, self.owner = kind, owner
        self.labelled = kind == "labels"  # the engine reads this, never a method's output name
        self.num_samples = None if num_samples is None else int(num_samples)

    @classmethod
    def of(cls, model):
        """The model's declared per-sample input (its `needs_labels` / `needs_indices`), or None."""
        kind = "labels" if getattr(model, "needs_labels", False) else None
        kind = "indices" if getattr(model, "needs_indices", False) else kind
        if kind is None:
            return None
        return cls(kind, type(model).__name__, getattr(model, "num_samples", None) if kind == "indices" else None)

    def check(self, values, count):
        """`values` checked as this kind for `count` images, as int32."""
        if self.kind == "labels":
            return check_labels(values, count, self.owner)
        return check_indices(values, count, self.num_samples, self.owner)

    def for_arrays(self, y, count):
        """The per-sample array of `count` NumPy images: `y`'s labels, checked, or their rows."""
        if self.kind == "labels":
            return self.check(y, count)
        return np.arange(count, dtype="int32")

    def __call__(self, batch, where=""):
        if len(batch) != 2:
            if self.kind == "labels":
                what = where or "a batch"
                raise ValueError(f"{self.owner} needs (images, labels) batches; {what} has {len(batch)} part(s).")
            check_indices(None, 0, owner=self.owner)
        images, values = batch
        if callable(getattr(values, "detach", None)):
            # A torch loader's batch stays torch: Keras's adapter converts the batch as a whole.
            self.check(values.detach().cpu().numpy(), len(images))
            return ((images, values),)
        return ((images, self.check(np.asarray(values), len(images))),)
