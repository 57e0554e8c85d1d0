"""`embedding.png` by UMAP, without umap-learn: a stub `umap` module stands in, and the figure is read back."""

import importlib.machinery
import sys
import types

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from keras_ssl import cli, plots


class StubUMAP:
    """Records how it was built and what it mapped; maps row i to a point no other row gets."""

    made = []

    def __init__(self, **options):
        self.options, self.seen = options, None
        StubUMAP.made.append(self)

    def fit_transform(self, features):
        self.seen = np.array(features)
        n = len(features)
        return np.stack([np.arange(n) * 10.0, np.arange(n) ** 2 + 0.5], axis=1)


@pytest.fixture
def stub_umap(monkeypatch):
    module = types.ModuleType("umap")
    module.__spec__ = importlib.machinery.ModuleSpec("umap", None)  # find_spec reads it
    module.UMAP = StubUMAP
    monkeypatch.setitem(sys.modules, "umap", module)
    StubUMAP.made = []
    return StubUMAP


def _clusters(n_per_class, dim=8):
    labels = np.repeat([2, 0, 1], n_per_class)  # not sorted: the figure draws class by class
    features = np.random.default_rng(0).normal(size=(len(labels), dim)) + 6 * np.eye(dim)[labels]
    return features, labels


def test_umap_is_called_as_documented_and_its_points_are_drawn(stub_umap):
    features, labels = _clusters(30)
    assert plots.embedding_method("auto") == "umap"  # the best installed map
    [ax] = plots.plot_embedding(features, labels, method="auto", seed=7, max_points=50).axes
    [umap] = stub_umap.made
    assert umap.options == {"n_components": 2, "n_neighbors": 15, "random_state": 7}
    assert ax.get_title() == "UMAP of 50 of 90 points (8-d features)"
    # what UMAP mapped: 50 distinct rows of the features, each a row of the input
    seen = umap.seen
    rows = [int(np.flatnonzero((features == row).all(axis=1))[0]) for row in seen]
    assert len(seen) == 50 and len(set(rows)) == 50
    # what the figure drew: the stub's point for each mapped row, in the series of that row's class
    expected = umap.fit_transform(seen)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2"]
    for collection, label in zip(ax.collections, (0, 1, 2)):
        mine = [i for i, r in enumerate(rows) if labels[r] == label]
        np.testing.assert_array_equal(collection.get_offsets(), expected[mine])


def test_umap_on_few_points_asks_for_fewer_neighbours(stub_umap, tmp_path):
    features, _ = _clusters(3)
    [ax] = plots.plot_embedding(features, None, method="umap", seed=0).axes
    assert stub_umap.made[0].options["n_neighbors"] == 8  # 9 points: at most 8 neighbours each
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), stub_umap.made[0].fit_transform(features))
    assert ax.get_title() == "UMAP of 9 points (8-d features)"
    args = cli.build_parser().parse_args(["plot", str(tmp_path), "--embedding", "umap"])  # accepted once installed
    assert args.embedding == "umap"
