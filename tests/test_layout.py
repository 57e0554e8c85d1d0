"""keras_ssl's conv backbones compute the same numbers in either layout.

On PyTorch they compute channels-first inside (`distribute.conv_layout`, for
speed); the images stay `(B, H, W, C)`. The reference is the channels-last
network with the same weights: equal features, and equal losses and weights
after SimCLR steps (so equal gradients).
"""

import keras
import numpy as np
import pytest
from conftest import BACKEND, random_images

import keras_ssl
from keras_ssl import backbones, distribute

# Keras's init, the draws these tests have always used: some draws leave a stem BN channel almost
# constant, where float32 gradients differ by 1e-3 between any two implementations (test_fast_layers).
BUILDERS = {
    "resnet18": lambda fmt: backbones.resnet18((16, 16, 3), width=0.25, data_format=fmt, initializer="keras"),
    "resnet50_imagenet_stem": lambda fmt: backbones.resnet50(
        (32, 32, 3), width=0.125, data_format=fmt, initializer="keras"
    ),
    "tiny": lambda fmt: backbones.tiny_encoder((16, 16, 3), width=8, data_format=fmt),
}


def _pair(name):
    last, first = BUILDERS[name]("channels_last"), BUILDERS[name]("channels_first")
    first.set_weights(last.get_weights())  # Keras stores kernels the same way in both layouts
    return last, first


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_both_layouts_give_the_same_features(name):
    last, first = _pair(name)
    size = last.input_shape[1]
    x = random_images(4, size=size).astype("float32") / 255.0
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(first(x, training=False)),
        keras.ops.convert_to_numpy(last(x, training=False)),
        atol=1e-4,
        rtol=1e-4,
    )
    if name != "resnet50_imagenet_stem":  # its 1x1 final maps: BatchNorm over 4 values amplifies rounding
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(first(x, training=True)),
            keras.ops.convert_to_numpy(last(x, training=True)),
            atol=1e-4,
            rtol=1e-4,
        )


def test_both_layouts_take_the_same_training_step():
    runs = []
    for encoder in _pair("resnet18"):
        keras.utils.set_random_seed(5)  # the same projector
        model = keras_ssl.SimCLR(encoder, hidden_dim=16, projection_dim=8, seed=3)
        model.compile(optimizer=keras.optimizers.SGD(0.05))
        history = model.fit(random_images(8), batch_size=8, epochs=1, shuffle=False, verbose=0)
        runs.append((history.history["loss"], model.encoder.get_weights()))
    # One step. PyTorch convolves in channels-last memory either way: equal to rounding. TensorFlow's
    # channels-first backward on CPU differs more (up to 3e-4 in the stem after one SGD step at batch
    # 64, 1e-3 after two at batch 8, measured), so one small step is compared there.
    tolerance = 1e-5 if BACKEND == "torch" else 1e-4
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=tolerance)
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, atol=tolerance, rtol=tolerance)


def test_the_default_layout_is_the_backends_fastest():
    assert distribute.conv_layout() == ("channels_first" if BACKEND == "torch" else "channels_last")
    encoder = backbones.resnet18((16, 16, 3), width=0.25)
    formats = {l.data_format for l in encoder.layers if isinstance(l, keras.layers.Conv2D)}
    assert formats == {distribute.conv_layout()}
    assert encoder.input_shape == (None, 16, 16, 3) and encoder.output_shape == (None, 128)
    with pytest.raises(ValueError, match="data_format"):
        backbones.resnet18((16, 16, 3), data_format="NCHW")
