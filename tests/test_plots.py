"""Figures: each writes a valid, non-blank PNG of the expected layout; bad inputs raise."""

import contextlib
import sys

import keras
import numpy as np
import pytest
from conftest import random_images

pytest.importorskip("matplotlib")
import matplotlib.image

from keras_ssl import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    """The image as matplotlib reads it, (H, W, 4) RGBA floats, checked to be a non-blank PNG."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path, format="png")
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.01  # something was drawn on the white canvas
    return image


def test_plot_history(tmp_path):
    history = {"loss": [3.0, 2.5, 2.1, 2.0], "knn_top1": [0.2, 0.3, 0.4, 0.45], "z_std": [0.1] * 4, "lr": 0.1}
    path = plots.plot_history(history, tmp_path / "sub" / "history.png")
    assert path.endswith("history.png")
    two_panels = read_png(path)
    one_panel = read_png(plots.plot_history({"loss": [1.0, 0.5]}, tmp_path / "loss.png"))
    assert two_panels.shape == (350, 1000, 4) and one_panel.shape == (350, 500, 4)  # 5 x 3.5 in per panel, 100 dpi

    class History:  # a keras.callbacks.History is read through its .history
        history = {"loss": [1.0, 0.9]}

    assert read_png(plots.plot_history(History(), tmp_path / "h.png")).shape == (350, 500, 4)
    with pytest.raises(ValueError, match="no numeric curves"):
        plots.plot_history({"note": "text"}, tmp_path / "empty.png")
    with pytest.raises(TypeError, match="history"):
        plots.plot_history([1.0, 0.5], tmp_path / "list.png")


def test_plot_views(tmp_path):
    images = random_images(8, 16)
    views = [random_images(8, 12, seed=s) for s in (1, 2)]
    grid = read_png(plots.plot_views(images, views, tmp_path / "views.png", n=6))
    assert grid.shape == (round(100 * (1.3 * 3 + 0.3)), round(100 * (1.3 * 6 + 0.8)), 4)
    gray = np.random.default_rng(0).uniform(size=(4, 8, 8, 1))
    tensor = keras.ops.convert_to_tensor(gray.astype("float32"))  # augmenters return backend tensors
    assert read_png(plots.plot_views(gray, [tensor], tmp_path / "gray.png")).shape[0] == 290
    with pytest.raises(ValueError, match="rank 4"):
        plots.plot_views(images[0], [], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="rank 4"):
        plots.plot_views(images, [images[0]], tmp_path / "bad.png")


def test_grid_shows_the_pixels(tmp_path):
    # one black and one white image: the saved figure holds both extremes
    images = np.stack([np.zeros((8, 8, 3)), np.ones((8, 8, 3))]).astype("float32")
    png = read_png(plots.plot_views(images, [], tmp_path / "bw.png"))
    assert png[..., :3].min() == 0.0 and (png[..., :3] == 1.0).all(axis=-1).any()


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_plot_embedding(tmp_path, method):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    features = rng.normal(size=(60, 8)) + 4 * np.eye(8)[labels]
    limit = contextlib.nullcontext()
    if method == "tsne":
        pytest.importorskip("sklearn")
        # OpenMP threads spinning on a busy machine turn t-SNE's 0.3 s into a minute (measured)
        limit = pytest.importorskip("threadpoolctl").threadpool_limits(1)
    with limit:
        png = read_png(plots.plot_embedding(features, labels, tmp_path / f"{method}.png", method=method))
    assert png.shape == (500, 600, 4)
    # class colours (tab10 blue, orange, green) appear in the picture
    for colour in ([0.12, 0.47, 0.71], [1.0, 0.5, 0.05], [0.17, 0.63, 0.17]):
        assert (np.abs(png[..., :3] - colour).max(axis=-1) < 0.03).any()


def test_plot_embedding_options_and_errors(tmp_path, monkeypatch):
    line = np.random.default_rng(0).normal(size=(30, 1))
    assert read_png(plots.plot_embedding(line, None, tmp_path / "a.png")).shape == (500, 600, 4)
    with pytest.raises(ValueError, match="method"):
        plots.plot_embedding(np.zeros((4, 3)), None, tmp_path / "b.png", method="lda")
    with pytest.raises(ValueError, match="labels"):
        plots.plot_embedding(np.zeros((4, 3)), [0, 1], tmp_path / "c.png")
    with pytest.raises(ValueError, match="N >= 2"):
        plots.plot_embedding(np.zeros((1, 3)), None, tmp_path / "d.png")
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    with pytest.raises(ImportError, match="umap-learn"):
        plots.plot_embedding(np.zeros((4, 3)), None, tmp_path / "e.png", method="umap")


def test_plot_retrieval(tmp_path):
    queries, gallery = random_images(3, 16), random_images(20, 16, seed=1)
    idx = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
    grid = read_png(plots.plot_retrieval(queries, gallery, idx, tmp_path / "nn.png"))
    assert grid.shape == (round(100 * (1.3 * 3 + 0.3)), round(100 * (1.3 * 5 + 0.8)), 4)
    with pytest.raises(ValueError, match="neighbor_indices"):
        plots.plot_retrieval(queries, gallery, idx[:2], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="lie in"):
        plots.plot_retrieval(queries, gallery, idx + 10, tmp_path / "bad.png")


def test_plot_reconstruction(tmp_path):
    x = np.random.default_rng(0).uniform(size=(8, 16, 16, 3)).astype("float32")
    masked = x * (np.random.default_rng(1).uniform(size=(8, 4, 4, 1)) > 0.75).repeat(4, 1).repeat(4, 2)
    png = read_png(plots.plot_reconstruction(x, masked, np.clip(x + 0.1, 0, 1), tmp_path / "mae.png", n=4))
    assert png.shape == (round(100 * (1.3 * 3 + 0.3)), round(100 * (1.3 * 4 + 0.8)), 4)
    with pytest.raises(ValueError, match="rank 4"):
        plots.plot_reconstruction(x, masked[0], x, tmp_path / "bad.png")
