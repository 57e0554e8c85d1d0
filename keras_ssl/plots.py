"""Figures written as PNG files (needs matplotlib: `pip install keras-ssl[plots]`).

matplotlib is imported inside each function, so `keras_ssl` imports without
it, and figures are drawn on their own Agg canvas without pyplot, so the
user's matplotlib backend and open figures are left alone. Each function
returns the PNG's path, or, given `path=None`, the matplotlib `Figure`
(to show in a notebook, or to read back what was drawn).
"""

import importlib
import importlib.util
import math
import os
import re
import warnings

import keras
import numpy as np

from keras_ssl import rundir

# Keys of a run's history.json that are run settings, not curves (some are lists, e.g. image_size).
RUN_SETTINGS = frozenset(
    ("image_size", "resumed_from", "value_range", "lr", "learning_rate", "epochs", "batch_size", "limit", "seed")
)
# A monitor logs the epoch of each measurement under "<metric>_epoch" (see `keras_ssl.monitors`).
EPOCH_SUFFIX = "_epoch"
_ACCURACY = re.compile(r"(^|_)(acc|accuracy|top\d+)(_|$)")
_PANEL_ORDER = ("loss", "accuracy", "feature std", "RankMe")


def plot_history(history, path=None, baselines=None):
    """Training curves, each drawn at the epochs it was measured, one panel per scale.

    Panels: losses; accuracies in [0, 1] (names with `acc`, `accuracy` or
    `topK`, e.g. `knn_top1`); feature standard deviations (`z_std`,
    `embedding_std`); RankMe; then each other metric on its own axis. Run
    settings (`RUN_SETTINGS`: `image_size`, `lr`...), scalars and text are
    left out. A metric measured every few epochs (`monitors.KNNMonitor`)
    is drawn at the epochs of its `"<metric>_epoch"` list; in a history
    without one (older runs) they are inferred from the monitors' schedule,
    every k epochs and the last (the legend says so), else it is left out
    with a warning.

    Args:
        history: a dict of lists (`History.history`, `history.json`) or a
            `keras.callbacks.History`.
        path: where the PNG goes; None returns the matplotlib `Figure`.
        baselines: optional `{label: accuracy}` drawn as dashed horizontal
            lines on the accuracy panel (the CLI: raw-pixel kNN).

    Returns:
        `path`, or the `Figure` when `path` is None.

    Example:
        >>> from keras_ssl.plots import plot_history
        >>> history = {"loss": [5.1, 4.2, 3.9], "knn_top1": [0.42, 0.47], "knn_top1_epoch": [2, 3]}  # or model.fit(...)
        >>> plot_history(history, "history.png")
        'history.png'
        >>> [ax.get_title() for ax in plot_history(history).axes]
        ['loss', 'accuracy']
    """
    panels = _history_panels(history)
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    from matplotlib.ticker import MaxNLocator

    fig = _figure(5 * cols, 3.5 * rows)
    for i, (title, curves) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        for label, x, y in curves:
            ax.plot(x, y, label=label, marker="o" if len(y) < 30 else None, markersize=3)
        if title == "accuracy":
            for j, (label, value) in enumerate((baselines or {}).items()):
                if value is not None:
                    ax.axhline(float(value), linestyle=("--", ":", "-.")[j % 3], color="gray", label=label)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)


def _history_panels(history):
    """`{panel title: [(label, epochs, values), ...]}` of a history, in `_PANEL_ORDER`, then one per metric."""
    epochs = getattr(history, "epoch", None)  # a History: 0-based epochs, initial_epoch included
    history = getattr(history, "history", history)
    if not isinstance(history, dict):
        raise TypeError(f"history must be a dict of lists or a History, got {type(history).__name__}.")
    curves = {
        k: np.asarray(v, float)
        for k, v in history.items()
        if k not in RUN_SETTINGS
        and not (k.endswith(EPOCH_SUFFIX) and k[: -len(EPOCH_SUFFIX)] in history)
        and isinstance(v, (list, tuple, np.ndarray))
        and np.ndim(v) == 1
        and len(v)
        and np.issubdtype(np.asarray(v).dtype, np.number)
    }
    if not curves:
        raise ValueError(f"no numeric curves to plot in the history (keys: {sorted(history)}).")
    n = max(len(v) for v in curves.values())
    full = np.asarray(epochs, float) + 1 if epochs is not None and len(epochs) == n else np.arange(1.0, n + 1)
    panels = {}
    for name, values in curves.items():
        label, x = name, history.get(name + EPOCH_SUFFIX)
        if x is not None:
            x = np.asarray(x, float)
            if x.shape != values.shape:
                raise ValueError(f"{name} has {len(values)} values but {name}{EPOCH_SUFFIX} has {len(x)} epochs.")
        elif len(values) == n:
            x = full
        else:
            every = _inferred_every(len(values), n)
            if every is None:
                warnings.warn(
                    f"plot_history: {name} has {len(values)} values for {n} epochs and no {name}{EPOCH_SUFFIX} "
                    "list saying when they were measured: not drawn.",
                    stacklevel=3,
                )
                continue
            x = full[_schedule(every, n) - 1]
            label = f"{name} (every {every} epochs, inferred)"
        panels.setdefault(_panel(name, values), []).append((label, x, values))
    order = {title: i for i, title in enumerate(_PANEL_ORDER)}
    return dict(sorted(panels.items(), key=lambda item: order.get(item[0], len(order))))


def _panel(name, values):
    """The panel of a metric: curves of one scale share an axis."""
    low = name.lower()
    if "loss" in low:
        return "loss"
    if _ACCURACY.search(low) and np.nanmin(values) >= 0 and np.nanmax(values) <= 1:
        return "accuracy"
    if low.endswith("std"):
        return "feature std"
    if "rankme" in low:
        return "RankMe"
    return name


def _schedule(every, n):
    """The 1-based epochs a monitor measures in an `n`-epoch fit: every `every`-th and the last."""
    epochs = list(range(every, n + 1, every))
    return np.asarray(epochs + ([n] if n % every else []))


def _inferred_every(count, n):
    """The monitor period that gives `count` measurements in `n` epochs (the smallest), or None."""
    every = math.ceil(n / count)
    return every if len(_schedule(every, n)) == count else None


def plot_views(images, views, path=None, n=8):
    """The original images in the first row, one row per augmented view below.

    Args:
        images: `(N, H, W, C)` originals (uint8, or float in [0, 1]).
        views: list of `(N, h, w, C)` augmented batches of the same images.
        path: where the PNG goes; None returns the matplotlib `Figure`.
        n: images (columns) shown.

    Returns:
        `path`, or the `Figure` when `path` is None.

    Example:
        >>> from keras_ssl.plots import plot_views
        >>> views = keras_ssl.views.simclr_views(16, seed=0)  # what `model.views` is for SimCLR
        >>> plot_views(x_small[:4], views(x_small[:4], training=True), "views.png")
        'views.png'
    """
    rows = [_images(images)[:n]] + [_images(v)[:n] for v in views]
    return _grid(rows, ["original"] + [f"view {i + 1}" for i in range(len(views))], path)


EMBEDDINGS = ("auto", "pca", "tsne", "umap")
_TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
# The optional module and pip package of each non-linear map.
_MODULES = {"tsne": ("sklearn", "scikit-learn"), "umap": ("umap", "umap-learn")}


def embedding_method(method="auto"):
    """The 2-D map `plot_embedding` draws for `method`: "auto" is the best installed, umap > tsne > pca.

    Args:
        method: one of `EMBEDDINGS`; an unknown one raises ValueError, one not installed ImportError.

    Returns:
        `"pca"`, `"tsne"` or `"umap"`.

    Example:
        >>> from keras_ssl.plots import embedding_method
        >>> embedding_method("pca"), embedding_method("auto") in ("tsne", "umap")
        ('pca', True)
    """
    if method not in EMBEDDINGS:
        raise ValueError(f"the embedding method must be one of {', '.join(EMBEDDINGS)}, got {method!r}.")
    if method == "auto":
        return next((m for m in ("umap", "tsne") if importlib.util.find_spec(_MODULES[m][0])), "pca")
    if method != "pca" and importlib.util.find_spec(_MODULES[method][0]) is None:
        package = _MODULES[method][1]
        raise ImportError(f"{_TITLES[method]} needs {package}: pip install {package} (or use pca).")
    return method


def plot_embedding(features, labels, path=None, method="auto", seed=0, max_points=2000):
    """A 2-D map of the features, coloured by class; the title names the map and the points drawn.

    Args:
        features: `(N, D)` features.
        labels: `(N,)` integer labels or None.
        path: where the PNG goes; None returns the matplotlib `Figure`.
        method: `"auto"` (the best installed: UMAP, else t-SNE, else PCA;
            see `embedding_method`), `"pca"` (NumPy SVD, always available),
            `"tsne"` (scikit-learn's `TSNE`) or `"umap"` (needs umap-learn).
        seed: the seed of t-SNE, UMAP and of the subset.
        max_points: t-SNE and UMAP map a random subset of at most this many
            points (their cost grows faster than N; 2000 points take
            seconds); PCA draws every point.

    Returns:
        `path`, or the `Figure` when `path` is None.

    Example:
        >>> from keras_ssl.evaluation import embed
        >>> from keras_ssl.plots import plot_embedding
        >>> plot_embedding(embed(encoder, x_test), y_test, "embedding.png")
        'embedding.png'
        >>> plot_embedding(embed(encoder, x_test), y_test, method="pca").axes[0].get_title()
        'PCA of 32 points (32-d features)'
    """
    method = embedding_method(method)
    f = _numpy(features).astype(float)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be an (N, D) array with N >= 2, got shape {f.shape}.")
    if labels is not None:
        labels = _numpy(labels).reshape(-1)
        if len(labels) != len(f):
            raise ValueError(f"got {len(labels)} labels for {len(f)} features.")
    total = len(f)
    if method != "pca" and total > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(total, int(max_points), replace=False))
        f, labels = f[keep], None if labels is None else labels[keep]
    xy = _map_2d(f, method, seed)
    fig = _figure(6, 5)
    ax = fig.add_subplot(1, 1, 1)
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4)
    else:
        classes = np.unique(labels)
        cmap = _colormap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            m = labels == c
            ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(i % cmap.N), label=str(c))
        if len(classes) <= 20:
            ax.legend(markerscale=3, fontsize="small", loc="best")
    shown = f"{len(f)} of {total}" if len(f) < total else f"{total}"
    ax.set(title=f"{_TITLES[method]} of {shown} points ({f.shape[1]}-d features)", xticks=[], yticks=[])
    return _save(fig, path)


def _map_2d(f, method, seed):
    """`(N, 2)` coordinates of the features by PCA, t-SNE or UMAP."""
    if method == "pca":
        centred = f - f.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))  # D == 1: a line
    if method == "tsne":
        # Imported when used (sklearn.manifold loads SciPy's graph code). One OpenMP thread: on a busy
        # 2-core machine two threads spin and took 113 s for 359 points, one 11 s (measured).
        tsne = importlib.import_module("sklearn.manifold").TSNE(
            2, perplexity=min(30.0, (len(f) - 1) / 3), random_state=seed
        )
        with importlib.import_module("threadpoolctl").threadpool_limits(1):
            return tsne.fit_transform(f)
    umap = importlib.import_module("umap")  # optional: pip install umap-learn
    return umap.UMAP(n_components=2, n_neighbors=min(15, len(f) - 1), random_state=seed).fit_transform(f)


def plot_retrieval(query_images, gallery_images, neighbor_indices, path=None):
    """Each query image followed by its nearest gallery images.

    Args:
        query_images: `(Q, H, W, C)`.
        gallery_images: `(N, H, W, C)`.
        neighbor_indices: `(Q, K)` gallery indices, nearest first (e.g. from
            `keras_ssl.evaluation.nearest_neighbors`).
        path: where the PNG goes; None returns the matplotlib `Figure`.

    Returns:
        `path`, or the `Figure` when `path` is None.

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


def plot_reconstruction(originals, masked, reconstructed, path=None, n=8):
    """MAE figure: originals, masked inputs and reconstructions, one row each.

    Args:
        originals, masked, reconstructed: `(N, H, W, C)` batches.
        path: where the PNG goes; None returns the matplotlib `Figure`.
        n: images (columns) shown.

    Returns:
        `path`, or the `Figure` when `path` is None.

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
    """Writes the PNG and returns `path`; returns the figure itself when `path` is None."""
    if path is None:
        return fig
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    rundir.write_atomically(path, lambda tmp: fig.savefig(tmp, format="png"))  # a full disk keeps the old one
    return path
