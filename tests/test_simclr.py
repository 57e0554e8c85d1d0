"""SimCLR through the shared engine: training, compilation modes, inputs, saving."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND, random_images, small_encoder
from numpy_refs import nt_xent as numpy_nt_xent

import keras_ssl


def make_model(**kw):
    kw.setdefault("hidden_dim", 16)
    kw.setdefault("projection_dim", 8)
    return keras_ssl.SimCLR(small_encoder(), seed=1, **kw)


def weights_of(layer):
    return [np.array(w) for w in layer.get_weights()]


def test_numpy_nt_xent_reference_on_a_hand_case():
    # Views a1 = b1 = e1, a2 = b2 = e2 (a1, a2 scaled: cosines ignore the norm), tau = 1.
    # Each view has cosine 1 with its twin and 0 with the two others, so every
    # view's loss is -log(e / (e + 1 + 1)) = log(1 + 2/e); so is the mean.
    got = numpy_nt_xent([[3.0, 0.0], [0.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]], temperature=1.0)
    np.testing.assert_allclose(got, np.log(1 + 2 / np.e), rtol=1e-12)
    # Swapping the twins' order breaks every pair: the positive then has cosine 0.
    # Each view: -log(1 / (e + 1 + 1)) = log(e + 2).
    got = numpy_nt_xent([[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]], temperature=1.0)
    np.testing.assert_allclose(got, np.log(np.e + 2), rtol=1e-12)


def test_loss_matches_nt_xent_of_its_own_forward():
    model = make_model()
    x = random_images(8)
    out = model(x, training=True)
    expected = numpy_nt_xent(keras.ops.convert_to_numpy(out["z1"]), keras.ops.convert_to_numpy(out["z2"]), 0.5)
    got = model.compute_loss(x, None, out, None, training=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5)


def test_views_differ_and_predict_returns_encoder_embeddings():
    model = make_model()
    x = random_images(8)
    out = model(x, training=True)
    assert not np.allclose(keras.ops.convert_to_numpy(out["z1"]), keras.ops.convert_to_numpy(out["z2"]))
    emb = model.predict(x, verbose=0)
    ref = model.encoder(x.astype("float32") / 255.0, training=False)
    np.testing.assert_allclose(emb, keras.ops.convert_to_numpy(ref), atol=1e-5)


def test_evaluate_gives_finite_ssl_loss():
    model = make_model()
    model.compile(optimizer="adam")
    result = model.evaluate(random_images(16), batch_size=8, verbose=0, return_dict=True)
    assert np.isfinite(result["loss"]) and result["loss"] > 0


def test_labeled_pairs_and_float_images_are_accepted():
    model = make_model()
    model.compile(optimizer="adam")
    x = random_images(16).astype("float32") / 255.0
    y = np.arange(16) % 3
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_generator_of_bare_batches_is_wrapped():
    model = make_model()
    model.compile(optimizer="adam")
    x = random_images(16)

    def batches():
        for _ in range(100):
            for i in range(0, 16, 8):
                yield x[i : i + 8]

    history = model.fit(batches(), steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_numpy_input_drops_incomplete_last_batch():
    model = make_model()
    model.compile(optimizer="adam")
    history = model.fit(random_images(17), batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (np.zeros((4, 16, 16), "uint8"), {}, "rank 4"),
        (np.zeros((4, 16, 16, 1), "uint8"), {}, "channel"),
        (np.zeros((0, 16, 16, 3), "uint8"), {}, "empty"),
        (np.zeros((4, 16, 16, 3), "int64"), {}, "value_range"),
        (np.full((4, 16, 16, 3), 200.0, "float32"), {}, "value_range"),
        (np.full((4, 16, 16, 3), np.nan, "float32"), {}, "NaN"),
        (np.zeros((4, 16, 16, 3), "uint8"), {"batch_size": 1}, "at least 2"),
    ],
)
def test_bad_input_is_rejected_before_training(x, kwargs, match):
    model = make_model()
    model.compile(optimizer="adam")
    before = weights_of(model.encoder)
    with pytest.raises(ValueError, match=match):
        model.fit(x, epochs=1, verbose=0, **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip(before, weights_of(model.encoder)))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="temperature"):
        make_model(temperature=0.0)
    with pytest.raises(ValueError, match="version"):
        make_model(version=3)
    with pytest.raises(ValueError, match="input_shape"):
        keras_ssl.SimCLR(keras.layers.Dense(4))


def test_v2_projector_has_three_layers():
    v1, v2 = make_model(version=1), make_model(version=2)
    count = lambda m: sum(isinstance(l, keras.layers.Dense) for l in m.projector._flatten_layers())
    assert count(v1) == 2 and count(v2) == 3


SAVE_SCRIPT = """
import os, sys, numpy as np, keras
sys.path.insert(0, {tests!r})
from conftest import small_encoder, random_images
import keras_ssl
keras.utils.set_random_seed(7)
# keras_ssl's own backbone, in the saving backend's layout (channels-first inside on PyTorch).
model = keras_ssl.SimCLR(keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8), hidden_dim=16,
                         projection_dim=8, seed=3)
model.compile(optimizer=keras.optimizers.Adam(1e-2))
x = random_images(16)
model.fit(x, batch_size=8, epochs=1, verbose=0)
model.encoder.save({path!r})
model.save({path!r}.replace(".keras", "_full.keras"))
np.save({path!r} + ".npy", model.encoder.predict(x.astype("float32") / 255.0, verbose=0))
"""


@pytest.mark.slow
@pytest.mark.parametrize("source", ["tensorflow", "jax", "torch"])
def test_encoder_and_model_saved_on_one_backend_load_on_another(source, tmp_path):
    if source == BACKEND:
        pytest.skip("same backend")
    path = str(tmp_path / f"encoder_{source}.keras")
    tests = os.path.dirname(__file__)
    env = dict(os.environ, KERAS_BACKEND=source)
    subprocess.run(
        [sys.executable, "-c", SAVE_SCRIPT.format(tests=tests, path=path)],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    encoder = keras.saving.load_model(path)
    x = random_images(16)
    expected = np.load(path + ".npy")
    got = encoder.predict(x.astype("float32") / 255.0, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The whole model (compiled on `source`) loads and trains here too.
    model = keras.saving.load_model(path.replace(".keras", "_full.keras"))
    history = model.fit(x, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
