"""LARS, the warm-up cosine schedule and the learning-rate scaling rule."""

import math

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder

import keras_ssl
from keras_ssl.optimizers import LARS, WarmupCosine, scale_learning_rate


def lars_reference(w, grads, lr, momentum, wd, eta, adapt):
    """NumPy LARS as in the SimCLR/BYOL reference code."""
    v = np.zeros_like(w)
    for g in grads:
        if adapt:
            g = g + wd * w
            wn, gn = np.linalg.norm(w), np.linalg.norm(g)
            g = g * (eta * wn / gn if wn > 0 and gn > 0 else 1.0)
        v = momentum * v + g
        w = w - lr * v
    return w


def test_lars_matches_numpy_and_excludes_bias():
    rng = np.random.default_rng(0)
    kernel0, bias0 = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(3,)).astype("float32")
    kernel = keras.Variable(kernel0)
    bias = keras.Variable(bias0)
    grads = [(rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(3,)).astype("float32")) for _ in range(3)]
    opt = LARS(0.5, momentum=0.9, weight_decay=1e-2, trust_coefficient=0.01)
    for gk, gb in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(gk), kernel), (keras.ops.convert_to_tensor(gb), bias)])
    want_k = lars_reference(kernel0, [g for g, _ in grads], 0.5, 0.9, 1e-2, 0.01, adapt=True)
    want_b = lars_reference(bias0, [g for _, g in grads], 0.5, 0.9, 1e-2, 0.01, adapt=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), want_k, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bias), want_b, rtol=1e-5, atol=1e-6)


def test_lars_trains_an_ssl_model_and_round_trips():
    model = keras_ssl.SimCLR(small_encoder(), hidden_dim=16, projection_dim=8, seed=0)
    schedule = WarmupCosine(0.5, total_steps=4, warmup_steps=1)
    model.compile(optimizer=LARS(schedule, weight_decay=1e-6))
    history = model.fit(random_images(16), batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    clone = LARS.from_config(model.optimizer.get_config())
    assert clone.trust_coefficient == 1e-3 and clone.lars_weight_decay == 1e-6


def test_warmup_cosine_values():
    s = WarmupCosine(1.0, total_steps=110, warmup_steps=10, final=0.1)
    values = [float(keras.ops.convert_to_numpy(s(t))) for t in (0, 5, 10, 60, 110, 200)]
    expected = [0.0, 0.5, 1.0, 0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)), 0.1, 0.1]
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert WarmupCosine.from_config(s.get_config()).warmup_steps == 10
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(1.0, total_steps=5, warmup_steps=10)


def test_scaling_rule_and_bad_options():
    assert scale_learning_rate(0.3, 1024) == pytest.approx(1.2)
    assert scale_learning_rate(0.3, 1024, rule="sqrt") == pytest.approx(0.6)
    with pytest.raises(ValueError, match="rule"):
        scale_learning_rate(0.3, 512, rule="cube")
    with pytest.raises(ValueError, match="momentum"):
        LARS(0.1, momentum=1.5)
