"""SupCon (Khosla et al. 2020, "Supervised Contrastive Learning"): its loss, its labels, one harness run.

Reference: `numpy_refs_contrastive.supcon`, HobbitLong/SupContrast `losses.py`
`SupConLoss` (contrast_mode 'all') in float64, one anchor at a time.
"""

import keras
import numpy as np
import numpy_refs_contrastive as ref
import pytest
from conftest import grads, random_images, small_encoder
from numpy_refs import nt_xent as numpy_nt_xent

from keras_ssl.engine.fit import fit_arguments
from keras_ssl.losses.contrastive import nt_xent, supcon
from keras_ssl.methods.supcon import SupCon

LABELS = np.array([0, 1, 2, 0, 1, 2, 3, 3]) % 4  # two images per class

# name -> a tiny model (for tests/test_methods.py's MAKERS; it trains on `LABELS` as y)
MAKERS = {"supcon": lambda: SupCon(small_encoder(), hidden_dim=16, projection_dim=8, seed=1)}


def randn(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_numpy_reference_on_a_hand_case():
    # Views a1 = (1, 0), a2 = (0, 1), b1 = (3, 4)/5 = (.6, .8), b2 = (0, 1); T = 1.
    # Labels [0, 0]: every other view is a positive, so each anchor's term is
    # log(sum_others e^s) - mean_others(s):
    #   a1: others' cosines (a2, b1, b2) = (0, .6, 0): log(2 + e^.6) - .2           = 1.140805
    #   b1: (a1, a2, b2) = (.6, .8, .8):               log(e^.6 + 2 e^.8) - 2.2 / 3 = 1.102953
    #   a2: (a1, b1, b2) = (0, .8, 1):                 log(1 + e^.8 + e) - .6       = 1.182352
    #   b2: (a1, a2, b1) = (0, 1, .8): same as a2                                   = 1.182352
    # mean = 1.152116. Labels [0, 1]: each anchor's only positive is its twin, NT-Xent's 0.885449
    # (hand-computed in test_losses.py).
    z1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    z2 = np.array([[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(ref.supcon(z1, z2, np.array([0, 0]), 1.0), 1.152115816920807, rtol=1e-12)
    np.testing.assert_allclose(ref.supcon(z1, z2, np.array([0, 1]), 1.0), 0.8854491502541402, rtol=1e-12)
    np.testing.assert_allclose(ref.supcon(z1, z2, np.array([-1, -1]), 1.0), 0.8854491502541402, rtol=1e-12)
    # The official code's rescaling by T / base_T.
    np.testing.assert_allclose(ref.supcon(z1, z2, np.array([0, 0]), 1.0, 0.5), 2 * 1.152115816920807, rtol=1e-12)
    np.testing.assert_allclose(float(supcon(z1, z2, np.array([0, 0]), 1.0)), 1.152115816920807, rtol=1e-6)


@pytest.mark.parametrize("base_temperature", [None, 0.07])
def test_loss_value_and_gradient_match_the_reference(base_temperature):
    z1, z2 = randn(8, 5, seed=1), randn(8, 5, seed=2)
    labels = np.array([0, 1, -1, 0, 2, -1, 1, 0])  # classes of 3, 2 and 1 images, two unlabelled
    t = 0.1
    got = float(supcon(z1, z2, labels, t, base_temperature))
    np.testing.assert_allclose(got, ref.supcon(z1, z2, labels, t, base_temperature), rtol=2e-5)
    g1, g2 = grads(lambda a, b: supcon(a, b, labels, t, base_temperature), z1, z2)
    want1 = ref.numeric_grad(lambda a: ref.supcon(a, z2, labels, t, base_temperature), z1)
    want2 = ref.numeric_grad(lambda b: ref.supcon(z1, b, labels, t, base_temperature), z2)
    np.testing.assert_allclose(g1, want1, atol=2e-5 * np.abs(want1).max())
    np.testing.assert_allclose(g2, want2, atol=2e-5 * np.abs(want2).max())


def test_unlabelled_images_contrast_as_simclr():
    """With every label -1 (or every label distinct) each view's only positive is its twin: SupCon is NT-Xent.

    With `base_temperature` b the official code multiplies by `T / b`, so the
    loss is then `(T / b) * nt_xent`; without it (our default) exactly `nt_xent`.
    """
    z1, z2 = randn(6, 4, seed=3), randn(6, 4, seed=4)
    t = 0.2
    unlabelled = -np.ones(6, "int32")
    want = numpy_nt_xent(z1, z2, t)
    np.testing.assert_allclose(ref.supcon(z1, z2, unlabelled, t), want, rtol=1e-10)
    np.testing.assert_allclose(float(supcon(z1, z2, unlabelled, t)), want, rtol=2e-5)
    np.testing.assert_allclose(float(supcon(z1, z2, np.arange(6), t)), want, rtol=2e-5)
    np.testing.assert_allclose(float(supcon(z1, z2, unlabelled, t)), float(nt_xent(z1, z2, t)), rtol=1e-5)
    np.testing.assert_allclose(float(supcon(z1, z2, unlabelled, t, base_temperature=0.07)), want * t / 0.07, rtol=2e-5)
    # One labelled pair of images: the others' terms stay NT-Xent's, theirs change.
    labels = np.array([5, -1, -1, 5, -1, -1])
    assert abs(float(supcon(z1, z2, labels, t)) - want) > 1e-3
    np.testing.assert_allclose(float(supcon(z1, z2, labels, t)), ref.supcon(z1, z2, labels, t), rtol=2e-5)


def test_loss_argument_errors():
    z = randn(4, 3)
    with pytest.raises(ValueError, match="labels"):
        supcon(z, z, np.zeros(3, "int32"))
    with pytest.raises(ValueError, match="rank 1"):
        supcon(z, z, np.zeros((4, 1), "int32"))
    with pytest.raises(ValueError, match="base_temperature"):
        supcon(z, z, np.zeros(4, "int32"), 0.1, base_temperature=0.0)


def test_bad_labels_fail_before_any_step():
    model = MAKERS["supcon"]()
    model.compile(optimizer="adam")
    x = random_images(16)
    bad = {
        "integers": (LABELS.astype("float32").repeat(2), "must be integers"),
        "pair up": (np.zeros(15, "int32"), "16 images but 15 labels"),
        "one-hot": (np.eye(4, dtype="int32")[np.arange(16) % 4], r"shape \(N,\)"),
        "missing": (None, r"fit\(images, labels\)"),
        "below -1": (np.full(16, -2), ">= -1"),
    }
    for labels, message in bad.values():
        with pytest.raises(ValueError, match=message):
            model.fit(x, labels, batch_size=8, verbose=0)
    assert int(model.step) == 0 and not model.built


def test_labels_from_a_dataset_of_batches_are_packed_and_checked():
    model = MAKERS["supcon"]()
    x = random_images(16)

    class Batches(keras.utils.PyDataset):
        def __init__(self, labels):
            super().__init__()
            self.labels = labels

        @property
        def num_batches(self):
            return 2

        def __getitem__(self, i):
            return x[8 * i : 8 * (i + 1)], self.labels[8 * i : 8 * (i + 1)]

    packed, y, batch_size = model.check_fit_data(Batches(np.tile(LABELS, 2)), None, None)
    ((images, labels),) = packed[1]
    assert y is None and batch_size is None
    np.testing.assert_array_equal(images, x[8:])
    np.testing.assert_array_equal(labels, LABELS)
    assert labels.dtype == np.int32
    with pytest.raises(ValueError, match="must be integers"):
        model.check_fit_data(Batches(np.tile(LABELS, 2) + 0.5), None, None)
    # Arrays: the seeded batch order of keras_ssl.data.ArrayBatches, labels riding with their images.
    (images, labels), y, _ = model.check_fit_data(x, np.arange(16), 8)
    assert y is None and np.array_equal(images, x) and labels.dtype == np.int32
    packed = fit_arguments(model, x, np.arange(16), 8, {})[0]
    ((images, labels),) = packed[0]
    np.testing.assert_array_equal(images, x[labels])
