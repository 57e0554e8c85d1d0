"""Figures, read back: what each one drew (the axes' data, legends, titles), not only that a PNG exists."""

import importlib.util
import json
import sys
import types
import warnings

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder

pytest.importorskip("matplotlib")
import matplotlib.image

import keras_ssl
from keras_ssl import cli, data, plots
from keras_ssl.cli import building
from keras_ssl.methods import SimCLR
from keras_ssl.monitors import CollapseMonitor, KNNMonitor

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    """The image as matplotlib reads it, (H, W, 4) RGBA floats, checked to be a non-blank PNG."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path, format="png")
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.01  # something was drawn on the white canvas
    return image


def panels(fig):
    """`{axes title: {legend label: (x, y)}}` of every line a figure drew."""
    out = {}
    for ax in fig.axes:
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        lines = {line.get_label(): (np.asarray(line.get_xdata()), np.asarray(line.get_ydata())) for line in ax.lines}
        assert sorted(legend) == sorted(lines)  # the legend names exactly the series drawn
        out[ax.get_title()] = lines
    return out


# ------------------------------------------------------------------ history.png
def test_history_draws_metrics_at_their_epochs_grouped_by_scale_without_settings():
    record = {  # as pretrain writes history.json: curves, monitor epochs, scores and the run's settings
        "loss": [5.0, 4.0, 3.5, 3.2, 3.1, 3.0],
        "z_std": [0.10, 0.12, 0.13, 0.14, 0.15, 0.15],
        "knn_top1": [0.40, 0.55, 0.61],
        "knn_top1_epoch": [2.0, 4.0, 6.0],
        "embedding_std": [0.2, 0.3],
        "embedding_std_epoch": [3, 6],
        "rankme": [7.5, 12.0],
        "rankme_epoch": [3, 6],
        "logit_scale": [14.0, 15.0, 16.0, 17.0, 18.0, 19.0],
        "learning_rate": [1e-3] * 6,
        "image_size": [32, 32],
        "resumed_from": [3, 0],
        "knn_raw_pixels": 0.5376,
        "epochs": 6,
        "method": "simclr",
    }
    fig = plots.plot_history(record, baselines={"raw pixels (kNN)": 0.5376, "not measured": None})
    drawn = panels(fig)
    assert list(drawn) == ["loss", "accuracy", "feature std", "RankMe", "logit_scale"]
    epochs = np.arange(1, 7)
    np.testing.assert_array_equal(drawn["loss"]["loss"][0], epochs)
    np.testing.assert_array_equal(drawn["accuracy"]["knn_top1"][0], [2, 4, 6])  # not 1, 2, 3
    np.testing.assert_allclose(drawn["accuracy"]["knn_top1"][1], [0.40, 0.55, 0.61])
    np.testing.assert_allclose(drawn["accuracy"]["raw pixels (kNN)"][1], [0.5376, 0.5376])
    assert sorted(drawn["feature std"]) == ["embedding_std", "z_std"]
    np.testing.assert_array_equal(drawn["feature std"]["embedding_std"][0], [3, 6])
    np.testing.assert_array_equal(drawn["RankMe"]["rankme"][0], [3, 6])
    labels = [label.split()[0] for lines in drawn.values() for label in lines]
    assert not set(labels) & {"image_size", "resumed_from", "learning_rate", "epochs", "knn_top1_epoch"}


def test_monitors_record_their_epochs_and_the_figure_puts_the_points_there():
    x, y = random_images(24, 16), np.arange(24) % 3
    model = types.SimpleNamespace(encoder=small_encoder())
    history = keras.callbacks.History()  # Keras's own record of the logs
    monitors = [KNNMonitor(x, y, every=5, k=5), CollapseMonitor(x, every=4, rank_threshold=None)]
    for callback in [*monitors, history]:
        callback.set_model(model)
        callback.set_params({"epochs": 12})
    history.on_train_begin()
    for epoch in range(12):
        logs = {"loss": 1.0 / (epoch + 1)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an untrained encoder's features may look collapsed
            for callback in [*monitors, history]:
                callback.on_epoch_end(epoch, logs)
    assert history.history["knn_top1_epoch"] == [5, 10, 12]  # every 5 epochs and the last
    assert history.history["rankme_epoch"] == [4, 8, 12]
    drawn = panels(plots.plot_history(history))
    np.testing.assert_array_equal(drawn["accuracy"]["knn_top1"][0], [5, 10, 12])
    np.testing.assert_array_equal(drawn["RankMe"]["rankme"][0], [4, 8, 12])
    np.testing.assert_array_equal(drawn["loss"]["loss"][0], np.arange(1, 13))


def test_old_histories_without_epoch_lists():
    old = {"loss": list(np.linspace(5, 3, 20)), "knn_top1": [0.3, 0.4, 0.5, 0.6]}  # --knn-every 5, 20 epochs
    drawn = panels(plots.plot_history(old))
    [(label, (x, _))] = drawn["accuracy"].items()
    assert "inferred" in label
    np.testing.assert_array_equal(x, [5, 10, 15, 20])
    with pytest.warns(UserWarning, match="knn_top1 has 4 values for 6 epochs"):  # no monitor schedule gives 4 of 6
        drawn = panels(plots.plot_history({"loss": [1.0] * 6, "knn_top1": [0.1] * 4}))
    assert list(drawn) == ["loss"]

    class History:  # a History read through .history and .epoch (here fit(..., initial_epoch=2))
        history = {"loss": [1.0, 0.9, 0.8]}
        epoch = [2, 3, 4]

    np.testing.assert_array_equal(panels(plots.plot_history(History()))["loss"]["loss"][0], [3, 4, 5])
    with pytest.raises(ValueError, match="knn_top1_epoch has 2 epochs"):
        plots.plot_history({"loss": [1.0] * 3, "knn_top1": [0.1] * 3, "knn_top1_epoch": [1, 2]})
    with pytest.raises(ValueError, match="no numeric curves"):
        plots.plot_history({"note": "text", "image_size": [32, 32]})
    with pytest.raises(TypeError, match="history"):
        plots.plot_history([1.0, 0.5])


def test_history_png_is_the_figure(tmp_path):
    history = {"loss": [3.0, 2.5, 2.1, 2.0], "knn_top1": [0.2, 0.3, 0.4, 0.45], "z_std": [0.1] * 4}
    path = plots.plot_history(history, tmp_path / "sub" / "history.png")
    assert path.endswith("history.png")
    assert read_png(path).shape == (350, 1500, 4)  # three panels of 5 x 3.5 in at 100 dpi
    assert read_png(plots.plot_history({"loss": [1.0, 0.5]}, tmp_path / "loss.png")).shape == (350, 500, 4)


def test_cli_plot_draws_history_json_without_settings(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    encoder = keras_ssl.backbones.tiny_encoder((32, 32, 1), width=8)
    encoder.save(run / "encoder.keras")
    record = {"loss": [5.1, 4.2, 4.0], "knn_top1": [0.3, 0.5], "knn_top1_epoch": [2.0, 3.0], "knn_raw_pixels": 0.41}
    record.update(image_size=[32, 32], resumed_from=None, data="digits", limit=64, epochs=3, batch_size=16)
    with open(run / "history.json", "w") as f:
        json.dump(record, f)
    drawn, real_history, real_embedding = {}, plots.plot_history, plots.plot_embedding

    def history_kept(record, path, **options):  # the CLI's figure, kept to be read back
        drawn["history"] = real_history(record, None, **options)
        return real_history(record, path, **options)

    def embedding_kept(features, labels, path, **options):
        drawn["embedding"] = real_embedding(features, labels, None, **options)
        return real_embedding(features, labels, path, **options)

    monkeypatch.setattr(plots, "plot_history", history_kept)
    monkeypatch.setattr(plots, "plot_embedding", embedding_kept)
    assert cli.main(["plot", str(run), "--embedding", "pca"]) == 0
    history = panels(drawn["history"])
    assert list(history) == ["loss", "accuracy"]
    assert sorted(history["accuracy"]) == ["knn_top1", "raw pixels (kNN)"]
    np.testing.assert_array_equal(history["accuracy"]["knn_top1"][0], [2, 3])
    [ax] = drawn["embedding"].axes
    assert ax.get_title() == f"PCA of 359 points ({encoder.output_shape[-1]}-d features)"  # the digits test split
    assert read_png(run / "history.png").shape == (350, 1000, 4)


# ------------------------------------------------------------------ embedding.png
def scatter_points(ax):
    return np.concatenate([c.get_offsets() for c in ax.collections])


def clusters(n_per_class=20, dim=8):
    labels = np.repeat([0, 1, 2], n_per_class)
    features = np.random.default_rng(0).normal(size=(len(labels), dim)) + 6 * np.eye(dim)[labels]
    return features, labels


def test_auto_is_the_best_installed_map(monkeypatch):
    features, labels = clusters()
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    assert plots.embedding_method("auto") == "tsne"
    [ax] = plots.plot_embedding(features, labels).axes
    assert ax.get_title() == "t-SNE of 60 points (8-d features)"
    monkeypatch.setitem(sys.modules, "sklearn", None)  # nor scikit-learn
    assert plots.embedding_method("auto") == "pca"
    assert plots.plot_embedding(features, labels).axes[0].get_title().startswith("PCA of 60 points")
    with pytest.raises(ImportError, match="pip install umap-learn"):
        plots.embedding_method("umap")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["plot", "run", "--embedding", "umap"])  # refused before any work
    with pytest.raises(ValueError, match="embedding method"):
        plots.embedding_method("lda")


def test_pca_draws_every_point_at_its_principal_coordinates():
    features, labels = clusters()
    [ax] = plots.plot_embedding(features, labels, method="pca").axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2"]
    # reference: the top two right singular vectors of the centred features, up to sign
    centred = features - features.mean(0)
    reference = centred @ np.linalg.svd(centred)[2][:2].T
    drawn = np.concatenate([ax.collections[c].get_offsets() for c in range(3)])
    order = np.argsort(labels, kind="stable")
    np.testing.assert_allclose(np.abs(drawn), np.abs(reference[order]), atol=1e-8)


NO_UMAP = pytest.mark.skipif(importlib.util.find_spec("umap") is None, reason="umap-learn is not installed")


@pytest.mark.parametrize("method, title", [("tsne", "t-SNE"), pytest.param("umap", "UMAP", marks=NO_UMAP)])
def test_nonlinear_maps_subsample_and_keep_the_classes_apart(method, title):
    features, labels = clusters(n_per_class=100)
    [ax] = plots.plot_embedding(features, labels, method=method, max_points=90, seed=1).axes
    assert ax.get_title() == f"{title} of 90 of 300 points (8-d features)"
    assert len(scatter_points(ax)) == 90
    # the three separated clusters stay apart in 2-D: each point's nearest drawn neighbour has its class
    xy = scatter_points(ax)
    drawn_labels = np.concatenate([[i] * len(c.get_offsets()) for i, c in enumerate(ax.collections)])
    distances = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy)) * 1e9
    assert (drawn_labels[distances.argmin(1)] == drawn_labels).mean() > 0.95


def test_embedding_png_and_errors(tmp_path):
    features, labels = clusters()
    png = read_png(plots.plot_embedding(features, labels, tmp_path / "pca.png", method="pca"))
    assert png.shape == (500, 600, 4)
    for colour in ([0.12, 0.47, 0.71], [1.0, 0.5, 0.05], [0.17, 0.63, 0.17]):  # tab10 blue, orange, green
        assert (np.abs(png[..., :3] - colour).max(axis=-1) < 0.03).any()
    line = np.random.default_rng(0).normal(size=(30, 1))
    assert len(scatter_points(plots.plot_embedding(line, None, method="pca").axes[0])) == 30
    with pytest.raises(ValueError, match="labels"):
        plots.plot_embedding(np.zeros((4, 3)), [0, 1], method="pca")
    with pytest.raises(ValueError, match="N >= 2"):
        plots.plot_embedding(np.zeros((1, 3)), None, method="pca")


# ------------------------------------------------------------------ image grids
def grid(fig):
    """`{(row, column): image data}` of a grid figure, in the order drawn."""
    axes = [ax for ax in fig.axes if ax.get_images()]
    cols = max(ax.get_subplotspec().colspan.stop for ax in axes)
    return {divmod(ax.get_subplotspec().num1, cols): np.asarray(ax.get_images()[0].get_array()) for ax in axes}


def test_views_retrieval_and_reconstruction_grids_show_their_images(tmp_path):
    images = random_images(8, 16)
    views = [random_images(8, 12, seed=s) for s in (1, 2)]
    cells = grid(plots.plot_views(images, views, n=6))
    assert sorted(cells) == [(r, c) for r in range(3) for c in range(6)]
    np.testing.assert_allclose(cells[(0, 4)], images[4] / 255.0)
    np.testing.assert_allclose(cells[(2, 5)], views[1][5] / 255.0)
    gray = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
    tensor = keras.ops.convert_to_tensor(gray)  # augmenters return backend tensors
    np.testing.assert_allclose(grid(plots.plot_views(gray, [tensor]))[(1, 3)], gray[3, ..., 0])

    gallery = random_images(20, 16, seed=1)
    idx = np.array([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 19]])
    cells = grid(plots.plot_retrieval(images[:3], gallery, idx))
    np.testing.assert_allclose(cells[(2, 0)], images[2] / 255.0)  # each row: the query, then its neighbours
    np.testing.assert_allclose(cells[(2, 4)], gallery[19] / 255.0)
    x = np.random.default_rng(0).uniform(size=(8, 16, 16, 3)).astype("float32")
    cells = grid(plots.plot_reconstruction(x, x * 0, np.clip(x + 0.1, 0, 1), n=4))
    np.testing.assert_allclose(cells[(2, 3)], np.clip(x[3] + 0.1, 0, 1), rtol=1e-6)
    assert read_png(plots.plot_views(images, views, tmp_path / "views.png", n=6)).shape == (420, 860, 4)
    with pytest.raises(ValueError, match="rank 4"):
        plots.plot_views(images[0], [])
    with pytest.raises(ValueError, match="neighbor_indices"):
        plots.plot_retrieval(images[:3], gallery, idx[:2])
    with pytest.raises(ValueError, match="lie in"):
        plots.plot_retrieval(images[:3], gallery, idx + 10)


# ------------------------------------------------------------------ the demo's views
def demo_crop(crop_scale):
    """The crop layer of the views the demo trains on, from its own flags with --crop-scale `crop_scale`."""
    argv = list(cli.DEMO)
    argv[argv.index("--crop-scale") + 1] = str(crop_scale)
    views = building._method_options(cli.build_parser().parse_args(argv), SimCLR, (32, 32, 1))["views"]
    [crop] = [layer for layer in views.augment.layers if isinstance(layer, keras_ssl.views.RandomResizedCrop)]
    return crop


def digit_shares(crop, images, draws=4):
    """For each view drawn, the share of its image's digit (ink >= 0.25, weighted) inside the crop's box."""
    ink = np.where(images >= 0.25, images, 0.0)[..., 0]
    side = np.arange(ink.shape[1])
    shares = []
    for _ in range(draws):
        top, left, h, w = (keras.ops.convert_to_numpy(t).astype(int) for t in crop.sample_boxes(*ink.shape))
        rows = (side >= top[:, None]) & (side < (top + h)[:, None])
        cols = (side >= left[:, None]) & (side < (left + w)[:, None])
        shares.append((ink * rows[:, :, None] * cols[:, None, :]).sum((1, 2)) / ink.sum((1, 2)))
    return np.concatenate(shares)


def test_the_demos_views_nearly_always_show_a_part_of_the_digit():
    (x, _), _ = data.load("scattered_digits")
    images = data.to_unit_float(x)
    demo_scale = float(cli.DEMO[cli.DEMO.index("--crop-scale") + 1])
    part = {s: float((digit_shares(demo_crop(s), images) >= 0.2).mean()) for s in (0.3, 0.5, demo_scale)}
    assert part[demo_scale] >= 0.999, part  # a fifth of the digit at least, in all but 1 view in 1000
    assert part[0.3] < 0.98, part  # the measure sees the views the issue saw: 3 % show less than a fifth
    # the boxes are the views: two copies of the crop draw the same boxes, and a box without ink gives a blank view
    # (dim: the resampling reaches half a pixel past the box)
    boxes, views = (keras_ssl.views.RandomResizedCrop.from_config(demo_crop(0.3).get_config()) for _ in range(2))
    shares = digit_shares(boxes, images, draws=1)
    brightest = keras.ops.convert_to_numpy(views(images, training=True)).max(axis=(1, 2, 3))
    assert (shares == 0).any() and (brightest[shares == 0] < 0.5).all() and (brightest[shares >= 0.2] > 0.5).all()
