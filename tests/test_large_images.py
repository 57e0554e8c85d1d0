"""The ImageNet-size recipes (96 and 224 px) train with the ImageNet ResNet stem."""

import keras
import numpy as np
import pytest
from conftest import random_images

import keras_ssl
from keras_ssl import backbones
from keras_ssl.layers import GaussianBlur, MultiCrop


def _blurs(views):
    pipelines = views.crops if isinstance(views, MultiCrop) else views._pipelines()
    return [
        layer for p in pipelines for layer in keras_ssl.keras_compat.sublayers(p) if isinstance(layer, GaussianBlur)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("method, size", [("SimCLR", 96), ("BYOL", 224), ("DINO", 96)])
def test_large_image_recipe_trains_with_the_imagenet_stem(method, size):
    cls = getattr(keras_ssl, method)
    spatial = (None, None, 3) if cls.local_views else (size, size, 3)
    encoder = backbones.resnet18(input_shape=spatial, stem="imagenet", width=0.25)
    assert encoder.get_layer("stem_conv").kernel_size == (7, 7)
    kwargs = dict(output_dim=32, hidden_dim=32, bottleneck_dim=16) if method == "DINO" else {}
    model = cls(encoder, input_shape=(size, size, 3), seed=0, **kwargs)
    kernels = {size // 10 | 1} | ({size // 2 // 10 | 1} if cls.local_views else set())
    assert {b.kernel_size for b in _blurs(model.views)} == kernels  # ~10 % of each crop's side
    model.compile(optimizer=keras.optimizers.SGD(1e-3))
    x = random_images(4, size)
    history = model.fit(x, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    views = model.views(x.astype("float32") / 255, training=True)
    assert tuple(views[0].shape) == (4, size, size, 3)
