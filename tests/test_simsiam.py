"""SimSiam: training, its loss on its own forward, heads, saving, options."""

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder

from keras_ssl import losses
from keras_ssl.methods.simsiam import SimSiam


def make_model(**kw):
    # A bottleneck of 8 lets a sample have all its ReLUs dead at init, so
    # p = bias = 0, where the cosine's gradient is ~1e6 (measured on TF).
    kw.setdefault("projection_dim", 32)
    kw.setdefault("prediction_dim", 16)
    return SimSiam(small_encoder(), seed=1, **kw)


def weights_of(layer):
    return [np.array(w) for w in layer.get_weights()]


def numpy_of(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def test_loss_is_symmetric_negative_cosine_of_its_own_forward():
    model = make_model()
    x = random_images(8)
    out = model(x, training=True)
    got = keras.ops.convert_to_numpy(model.compute_loss(x, None, out, None, training=True))
    via_losses = 0.5 * (losses.negative_cosine(out["p1"], out["z2"]) + losses.negative_cosine(out["p2"], out["z1"]))
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(via_losses), rtol=1e-5)

    def cos(a, b):
        a, b = numpy_of(a), numpy_of(b)
        return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    reference = -0.5 * (cos(out["p1"], out["z2"]).mean() + cos(out["p2"], out["z1"]).mean())
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-6)
    # The two views differ, so the loss is not the trivial -1.
    assert got > -0.999


def test_heads_follow_the_paper_shapes():
    model = SimSiam(small_encoder(), seed=1)
    d = model.feature_dim  # 16 for the small encoder
    assert model.projection_dim == 4 * d and model.prediction_dim == d
    dense = [l for l in model.projector._flatten_layers() if isinstance(l, keras.layers.Dense)]
    norms = [l for l in model.projector._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    assert [l.units for l in dense] == [4 * d] * 3
    # The output BatchNorm standardises without a learned scale or shift.
    assert len(norms) == 3 and not norms[-1].scale and not norms[-1].center
    pred_dense = [l for l in model.predictor._flatten_layers() if isinstance(l, keras.layers.Dense)]
    assert [l.units for l in pred_dense] == [d, 4 * d]  # bottleneck then back up
    out = model(random_images(8), training=True)
    assert tuple(out["z1"].shape) == tuple(out["p1"].shape) == (8, 4 * d)


def test_evaluate_gives_finite_loss():
    model = make_model()
    model.compile(optimizer="adam")
    result = model.evaluate(random_images(16), batch_size=8, verbose=0, return_dict=True)
    assert np.isfinite(result["loss"]) and -1.0 <= result["loss"] <= 1.0


def test_bad_options_and_batches_are_rejected():
    with pytest.raises(ValueError, match="projection_dim"):
        make_model(projection_dim=0)
    with pytest.raises(ValueError, match="prediction_dim"):
        make_model(prediction_dim=-1)
    with pytest.raises(ValueError, match="stop_gradient"):
        make_model(stop_gradient="no")
    model = make_model()
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="at least 2"):
        model.fit(random_images(8), batch_size=1, epochs=1, verbose=0)
