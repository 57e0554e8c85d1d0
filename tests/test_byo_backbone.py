"""Bring your own backbone: keras.applications, subclassed, Lambda, keras-hub, tokens."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from byo_encoders import make
from conftest import BACKEND, random_images

import keras_ssl
from keras_ssl import backbones
from keras_ssl.layers import multi_crop_views

METHODS = {
    "byol": lambda e: keras_ssl.BYOL(e, hidden_dim=16, projection_dim=8, seed=1),
    "moco": lambda e: keras_ssl.MoCoV2(e, hidden_dim=16, projection_dim=8, queue_size=16, seed=1),
    # Local crops of the global size: MobileNetV3 refuses 16-px inputs.
    "dino": lambda e: keras_ssl.DINO(
        e,
        output_dim=16,
        hidden_dim=16,
        bottleneck_dim=8,
        seed=1,
        views=multi_crop_views(32, local_size=32, num_local=1, seed=2),
    ),
}
# With the cross-backend test below (BYOL-subclassed, MoCo-MobileNetV2,
# DINO-MobileNetV3), every method trains on both applications and the
# subclassed encoder; compiling each costs 10-40 s, so no case repeats.
CASES = [
    ("byol", "MobileNetV3Small"),
    ("byol", "MobileNetV2"),
    ("byol", "lambda"),
    ("moco", "MobileNetV3Small"),
    ("moco", "subclassed"),
    ("dino", "MobileNetV2"),
    ("dino", "subclassed"),
]
# The applications' cases (10-40 s each to compile) test the momentum copy of a Keras application,
# which no backend changes: each runs on one backend in turn; the cheap encoders run on all three.
_APPLICATIONS = [case for case in CASES if case[1].startswith("MobileNet")]
CASES = [
    case
    for case in CASES
    if case not in _APPLICATIONS or ("torch", "tensorflow", "jax")[_APPLICATIONS.index(case) % 3] == BACKEND
]


def _numpy(weights):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in weights]


@pytest.mark.parametrize("method,kind", CASES)
def test_momentum_methods_train_on_any_encoder(method, kind):
    encoder = make(kind)
    model = METHODS[method](encoder)
    online, target = model.momentum_pairs[0]
    target = getattr(model, target)
    assert target is not encoder and len(target.weights) == len(encoder.weights)
    for o, t in zip(_numpy(encoder.weights), _numpy(target.weights)):
        np.testing.assert_array_equal(o, t)  # the target starts equal
    assert not any(v.trainable for v in target.weights)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    before = _numpy(target.weights)
    history = model.fit(random_images(8, size=32), batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # The EMA moved the target towards the updated online weights.
    after_t, after_o = _numpy(target.weights), _numpy(encoder.weights)
    moved = [not np.array_equal(a, b) for a, b in zip(before, after_t)]
    assert any(moved)
    kernels = [i for i, v in enumerate(encoder.weights) if v.trainable]
    i = kernels[0]
    assert np.abs(after_t[i] - after_o[i]).max() <= np.abs(before[i] - after_o[i]).max() + 1e-7


def test_uncopyable_layer_is_named():
    class Opaque(keras.layers.Layer):  # its config cannot rebuild it: `table` is no config value
        def __init__(self, table):
            super().__init__()
            self.table = table
            self.dense = keras.layers.Dense(4)

        def call(self, x):
            return self.dense(x)

    inputs = keras.Input((8, 8, 3))
    h = Opaque(object())(keras.layers.GlobalAveragePooling2D()(inputs))
    encoder = keras.Model(inputs, h)
    with pytest.raises(ValueError, match="layer 'opaque' \\(Opaque\\)"):
        keras_ssl.BYOL(encoder, hidden_dim=8, projection_dim=4)


# One per kind of scaling: caffe (a 1x1 conv), [-1, 1], 0-255 (MobileNetV3 and EfficientNet as
# ConvNeXt; DenseNet's mean/std is checked by hand below).
@pytest.mark.parametrize("name", ["ResNet50", "ConvNeXtTiny", "MobileNetV2"])
def test_applications_get_the_input_scaling_keras_documents(name):
    """Our [0, 1] encoder == the architecture on Keras's own preprocess_input of 0-255 pixels."""
    encoder = backbones.application(name, input_shape=(32, 32, 3))
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    module = getattr(keras.applications, name).__module__.rsplit(".", 1)[-1]
    preprocess = getattr(keras.applications, module).preprocess_input
    inner = keras.Model(encoder.get_layer("input_scaling").output, encoder.output)  # the architecture alone
    expected = keras.ops.convert_to_numpy(inner(preprocess(255.0 * x.copy()), training=False))
    got = keras.ops.convert_to_numpy(encoder(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_input_scaling_matches_hand_values():
    # caffe (keras.applications.resnet): RGB -> BGR, minus the BGR ImageNet means, on 0-255.
    matrix, offset = backbones.input_scaling("ResNet50")
    np.testing.assert_allclose(offset, [-103.939, -116.779, -123.68], atol=1e-3)
    np.testing.assert_allclose(matrix, 255.0 * np.eye(3)[::-1], atol=1e-3)
    # 'tf' mode (MobileNetV2): x / 127.5 - 1.
    matrix, offset = backbones.input_scaling("MobileNetV2")
    np.testing.assert_allclose(matrix, 2.0 * np.eye(3), atol=1e-5)
    np.testing.assert_allclose(offset, [-1, -1, -1], atol=1e-5)
    # 'torch' mode (DenseNet): (x - mean) / std on [0, 1].
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    matrix, offset = backbones.input_scaling("DenseNet121")
    np.testing.assert_allclose(matrix, np.diag(1 / std), rtol=1e-5)
    np.testing.assert_allclose(offset, -mean / std, rtol=1e-5)


def test_grayscale_and_bad_names():
    encoder = backbones.get("mobilenet_v3_small", (32, 32, 1))
    assert encoder(np.zeros((2, 32, 32, 1), "float32")).shape[0] == 2
    with pytest.raises(ValueError, match="unknown backbone 'resnet9'"):
        backbones.get("resnet9", (32, 32, 3))
    with pytest.raises(ValueError, match="does not exist"):
        backbones.application("ResNet50", (32, 32, 3), weights="/no/such/file.h5")


def test_weights_from_a_local_file(tmp_path):
    source = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    path = str(tmp_path / "mnv3.weights.h5")
    source.save_weights(path)
    encoder = backbones.application("MobileNetV3Small", (32, 32, 3), weights=path)
    for a, b in zip(_numpy(source.weights), _numpy(encoder.weights)):
        np.testing.assert_array_equal(a, b)


def test_token_encoders_are_mean_pooled():
    inputs = keras.Input((16, 16, 3))
    tokens = keras.layers.Reshape((16, 48))(keras.layers.Conv2D(48, 4, strides=4)(inputs))
    encoder = keras.Model(inputs, keras.layers.Dense(12)(tokens))  # (B, 16 tokens, 12)
    model = keras_ssl.SimCLR(encoder, hidden_dim=8, projection_dim=4, seed=0)
    assert model.feature_dim == 12
    x = random_images(8)
    model.compile(optimizer="adam")
    assert np.isfinite(model.fit(x, batch_size=8, epochs=1, verbose=0).history["loss"][0])
    features = keras_ssl.evaluation.embed(encoder, x)
    expected = keras.ops.convert_to_numpy(encoder(x.astype("float32") / 255.0)).mean(axis=1)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def test_keras_hub_vit_with_class_token():
    keras_hub = pytest.importorskip("keras_hub")
    vit = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
    )
    encoder = backbones.from_keras_hub(vit, pooling="cls")
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    tokens = keras.ops.convert_to_numpy(vit(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(encoder(x)), tokens[:, 0], rtol=1e-5, atol=1e-5)
    model = keras_ssl.BYOL(encoder, hidden_dim=8, projection_dim=4, seed=0)
    model.compile(optimizer="adam")
    assert np.isfinite(model.fit(random_images(8, size=32), batch_size=8, epochs=1, verbose=0).history["loss"][0])


TRAIN_AND_SAVE = """
import sys, numpy as np, keras
sys.path.insert(0, {tests!r})
from byo_encoders import make
import keras_ssl
keras.utils.set_random_seed(0)  # the same trained weights on every run
x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("uint8")
probe = np.random.default_rng(1).random((4, 32, 32, 3)).astype("float32")
for method, kind in (("BYOL", "subclassed"), ("MoCoV2", "MobileNetV2"), ("DINO", "MobileNetV3Small")):
    kw = dict(output_dim=16, hidden_dim=16, bottleneck_dim=8) if method == "DINO" else dict(hidden_dim=16, projection_dim=8)
    if method == "MoCoV2":
        kw["queue_size"] = 16
    if method == "DINO":
        kw["views"] = keras_ssl.layers.multi_crop_views(32, local_size=32, num_local=1, seed=2)
    model = getattr(keras_ssl, method)(make(kind), seed=1, **kw)
    if kind == "subclassed":  # a trained step's weights (saving after fit on every backend: test_simclr.py)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        model.fit(x, batch_size=8, epochs=1, verbose=0)
    else:  # every MobileNet weight and BatchNorm statistic moved off its initial value, without 60-90 s of
        # compiling MobileNet training steps on the saving backend
        rng = np.random.default_rng(2)
        for v in model.encoder.weights:
            value = keras.ops.convert_to_numpy(v)
            moved = np.abs(value) + 0.5 if "variance" in v.path else value + 0.1 * rng.normal(size=value.shape)
            v.assign(moved.astype(value.dtype))
    model.encoder.save({out!r} + kind + ".keras")
    np.save({out!r} + kind + ".npy", keras.ops.convert_to_numpy(model.encoder(probe, training=False)))
"""


def test_trained_and_changed_encoders_load_on_another_backend(tmp_path):
    # Saved on PyTorch (channels-first inside: the layout most likely to break) for TensorFlow and JAX, and
    # on TensorFlow for PyTorch. Not on JAX: building a MobileNet there compiles every initializer and op
    # one by one (60-80 s), and test_simclr.py / test_methods.py already load JAX-saved models elsewhere.
    source = {"tensorflow": "torch", "jax": "torch", "torch": "tensorflow"}[BACKEND]
    out = str(tmp_path) + os.sep
    script = TRAIN_AND_SAVE.format(tests=os.path.dirname(__file__), out=out)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ, KERAS_BACKEND=source),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probe = np.random.default_rng(1).random((4, 32, 32, 3)).astype("float32")
    for kind in ("MobileNetV3Small", "MobileNetV2", "subclassed"):
        encoder = keras.saving.load_model(out + kind + ".keras")
        got = keras.ops.convert_to_numpy(encoder(probe, training=False))
        # 50+ layers through two backends' convolution kernels: float32 round-off, not 1e-5.
        np.testing.assert_allclose(got, np.load(out + kind + ".npy"), rtol=1e-3, atol=1e-4)


def test_a_bare_application_that_rescales_itself_is_warned_about():
    bare = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg")
    with pytest.warns(UserWarning, match="rescales 0-255 pixels itself"):
        keras_ssl.SimCLR(bare, hidden_dim=8, projection_dim=4)
    assert backbones.rescales_0_255(bare)
    assert not backbones.rescales_0_255(backbones.application("MobileNetV3Small", (32, 32, 3)))
    assert not backbones.rescales_0_255(backbones.application("ResNet50", (32, 32, 3)))


def test_a_normalization_with_a_0_255_mean_counts_as_rescaling_itself():
    # ConvNeXt's stem subtracts ImageNet's mean in 0-255 pixels (keras.applications.convnext).
    mean = [0.485 * 255, 0.456 * 255, 0.406 * 255]
    variance = [(0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2]
    stem = keras.layers.Normalization(mean=mean, variance=variance)
    bare = keras.Sequential([keras.Input((16, 16, 3)), stem, keras.layers.GlobalAveragePooling2D()])
    assert backbones.rescales_0_255(bare)
    unit = keras.layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.05, 0.05, 0.05])
    assert not backbones.rescales_0_255(
        keras.Sequential([keras.Input((16, 16, 3)), unit, keras.layers.GlobalAveragePooling2D()])
    )
    if keras.backend.backend() == "jax":  # the real stem, once (building it takes seconds)
        convnext = keras.applications.ConvNeXtTiny(input_shape=(32, 32, 3), include_top=False, weights=None)
        assert backbones.rescales_0_255(convnext)
        assert not backbones.rescales_0_255(backbones.application("ConvNeXtTiny", (32, 32, 3)))
