"""Figures written as PNG files (needs matplotlib: `pip install keras-ssl[plots]`).

matplotlib is imported inside each function, so `keras_ssl` imports without
it, and figures are drawn on their own Agg canvas without pyplot, so the
user's matplotlib backend and open figures are left alone.
"""

import importlib
import os

import keras
import numpy as np


def plot_history(history, path):
    """Training curves: the losses in one panel, other metrics (kNN, probe...) in another.

    Args:
        history: a dict of lists (`History.history`, `history.json`) or a
            `keras.callbacks.History`.
        path: where the PNG goes.

    Returns:
        `path`.

    Example:
        >>> from keras_ssl.plots import plot_history
        >>> history = {"loss": [5.1, 4.2, 3.9], "knn_top1": [0.31, 0.42, 0.47]}  # or model.fit(...)
        >>> plot_history(history, "history.png")
        'history.png'
    """
    history = getattr(history, "history", history)
    if not isinstance(history, dict):
        raise TypeError(f"history must be a dict of lists or a History, got {type(history).__name__}.")
    curves = {
        k: np.asarray(v, float)
        for k, v in history.items()
        if np.ndim(v) == 1 and len(v) and np.issubdtype(np.asarray(v).dtype, np.number)
    }
    if not curves:
        raise ValueError(f"no numeric curves to plot in the history (keys: {sorted(history)}).")
    losses = {k: v for k, v in curves.items() if "loss" in k}
    others = {k: v for k, v in curves.items() if "loss" not in k}
    panels = [(title, group) for title, group in (("loss", losses), ("metrics", others)) if group]
    fig = _figure(5 * len(panels), 3.5)
    for i, (title, group) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name, values in group.items():
            ax.plot(np.arange(1, len(values) + 1), values, label=name, marker="." if len(values) < 30 else None)
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_views(images, views, path, n=8):
    """The original images in the first row, one row per augmented view below.

    Args:
        images: `(N, H, W, C)` originals (uint8, or float in [0, 1]).
        views: list of `(N, h, w, C)` augmented batches of the same images.
        path: where the PNG goes.
        n: images (columns) shown.

    Returns:
        `path`.

    Example:
        >>> from keras_ssl.plots import plot_views
        >>> views = keras_ssl.views.simclr_views(16, seed=0)  # what `model.views` is for SimCLR
        >>> plot_views(x_small[:4], views(x_small[:4], training=True), "views.png")
        'views.png'
    """
    rows = [_images(images)[:n]] + [_images(v)[:n] for v in views]
    return _grid(rows, ["original"] + [f"view {i + 1}" for i in range(len(views))], path)


def plot_embedding(features, labels, path, method="pca", seed=0):
    """A 2-D map of the features, coloured by class.

    Args:
        features: `(N, D)` features.
        labels: `(N,)` integer labels or None.
        path: where the PNG goes.
        method: `"pca"` (NumPy SVD, always available), `"tsne"` (needs
            scikit-learn) or `"umap"` (needs umap-learn). The last two are
            slow for large N: subsample a few thousand points.
        seed: the seed of t-SNE and UMAP.

    Returns:
        `path`.

    Example:
        >>> from keras_ssl.evaluation import embed
        >>> from keras_ssl.plots import plot_embedding
        >>> plot_embedding(embed(encoder, x_test), y_test, "pca.png")
        'pca.png'
    """
    f = _numpy(features).astype(float)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be an (N, D) array with N >= 2, got shape {f.shape}.")
    if method == "pca":
        centred = f - f.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))  # D == 1: a line
    elif method == "tsne":
        manifold = _optional("sklearn.manifold", "scikit-learn", method)
        xy = manifold.TSNE(2, perplexity=min(30.0, (len(f) - 1) / 3), random_state=seed).fit_transform(f)
    elif method == "umap":
        umap = _optional("umap", "umap-learn", method)
        xy = umap.UMAP(n_neighbors=min(15, len(f) - 1), random_state=seed).fit_transform(f)
    else:
        raise ValueError(f"method must be 'pca', 'tsne' or 'umap', got {method!r}.")
    fig = _figure(6, 5)
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4)
    else:
        labels = _numpy(labels).reshape(-1)
        if len(labels) != len(f):
            raise ValueError(f"got {len(labels)} labels for {len(f)} features.")
        classes = np.unique(labels)
        cmap = _colormap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            m = labels == c
            ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(i % cmap.N), label=str(c))
        if len(classes) <= 20:
            ax.legend(markerscale=3, fontsize="small", loc="best")
    ax.set(title=f"{method.upper()} of {f.shape[1]}-d features", xticks=[], yticks=[])
    return _save(fig, path)


def plot_retrieval(query_images, gallery_images, neighbor_indices, path):
    """Each query image followed by its nearest gallery images.

    Args:
        query_images: `(Q, H, W, C)`.
        gallery_images: `(N, H, W, C)`.
        neighbor_indices: `(Q, K)` gallery indices, nearest first (e.g. from
            `keras_ssl.evaluation.nearest_neighbors`).
        path: where the PNG goes.

    Returns:
        `path`.

    Example:
        >>> from keras_ssl.evaluation import embed, nearest_neighbors
        >>> from keras_ssl.plots import plot_retrieval
        >>> f_train, f_test = embed(encoder, x_train, batch_size=32), embed(encoder, x_test, batch_size=32)
        >>> _, idx = nearest_neighbors(f_test[:4], f_train, k=4)
        >>> plot_retrieval(x_test[:4], x_train, idx, "retrieval.png")
        'retrieval.png'
    """
    queries, gallery = _images(query_images), _images(gallery_images)
    idx = _numpy(neighbor_indices)
    if idx.ndim != 2 or len(idx) != len(queries):
        raise ValueError(f"neighbor_indices must be (Q, K) with Q={len(queries)} queries, got shape {idx.shape}.")
    if idx.size and (idx.min() < 0 or idx.max() >= len(gallery)):
        raise ValueError(f"neighbor_indices must lie in [0, {len(gallery)}).")
    # One row per query: transpose into the grid's rows-of-columns layout.
    columns = [queries] + [gallery[idx[:, j]] for j in range(idx.shape[1])]
    rows = [np.stack([col[q] for col in columns]) for q in range(len(queries))]
    return _grid(
        rows,
        [f"query {q}" for q in range(len(queries))],
        path,
        titles=["query"] + [f"nn {j + 1}" for j in range(idx.shape[1])],
    )


def plot_reconstruction(originals, masked, reconstructed, path, n=8):
    """MAE figure: originals, masked inputs and reconstructions, one row each.

    Args:
        originals, masked, reconstructed: `(N, H, W, C)` batches.
        path: where the PNG goes.
        n: images (columns) shown.

    Returns:
        `path`.

    Example:
        >>> from keras_ssl.plots import plot_reconstruction
        >>> vit = keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=8, depth=1, heads=2)
        >>> model = keras_ssl.MAE(vit, decoder_dim=8, decoder_depth=1, decoder_heads=2)
        >>> masked, reconstructed = model.reconstruct(x_small[:4], seed=0)
        >>> plot_reconstruction(x_small[:4], masked, reconstructed, "mae.png")
        'mae.png'
    """
    rows = [_images(a)[:n] for a in (originals, masked, reconstructed)]
    return _grid(rows, ["original", "masked", "reconstructed"], path)


# ------------------------------------------------------------------ helpers
def _numpy(x):
    """NumPy array of an array, list or backend tensor (the augmenters return tensors)."""
    if isinstance(x, (np.ndarray, list, tuple)):
        return np.asarray(x)
    return keras.ops.convert_to_numpy(x)


def _optional(module, package, method):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"method={method!r} needs {package}: pip install {package}, or use 'pca'.") from e


def _images(x):
    """Images as float in [0, 1] for display: uint8 / 255, floats clipped."""
    x = _numpy(x)
    if x.ndim != 4:
        raise ValueError(f"expected images of rank 4 (batch, height, width, channels), got {x.shape}.")
    x = x / 255.0 if x.dtype == np.uint8 else x.astype(float)
    return np.clip(x, 0.0, 1.0)


def _grid(rows, row_labels, path, titles=None):
    cols = max(len(r) for r in rows)
    fig = _figure(1.3 * cols + 0.8, 1.3 * len(rows) + 0.3)
    for i, (row, label) in enumerate(zip(rows, row_labels)):
        for j, image in enumerate(row):
            ax = fig.add_subplot(len(rows), cols, i * cols + j + 1)
            gray = image.shape[-1] == 1
            ax.imshow(
                image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=1, interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize="small")
            if titles and i == 0:
                ax.set_title(titles[j], fontsize="small")
    return _save(fig, path)


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _colormap(name):
    import matplotlib

    return matplotlib.colormaps[name]


def _save(fig, path):
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, format="png")
    return path
