"""uint8 arrays under TensorFlow's MultiWorkerMirroredStrategy reach Keras as float32 in [0, 1] (issue 33).

TensorFlow's collectives refuse uint8, and Keras averages the first batch across the workers to build
the model. The policy (`engine.fit.fit_arguments`) is checked with the strategy's two signs faked (a
multi-replica TensorFlow model, two processes); the reference is the model's own `preprocess` of uint8.
"""

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder

from keras_ssl.engine import fit as fit_policy
from keras_ssl.methods import SimCLR, SupCon


@pytest.fixture
def two_workers(monkeypatch):
    monkeypatch.setattr(fit_policy.backend, "process_count", lambda: 2)
    monkeypatch.setattr(fit_policy.backend, "needs_array_input", lambda model: True)


def test_uint8_arrays_become_unit_floats_only_across_workers(two_workers, monkeypatch):
    images = random_images(16)
    model = SimCLR(small_encoder(), projection_dim=8, hidden_dim=16)
    x, _, _, _, _ = fit_policy.fit_arguments(model, images, None, 8, {"epochs": 1})
    assert x.dtype == np.float32  # what one worker's step would see from the uint8 images:
    np.testing.assert_allclose(x, keras.ops.convert_to_numpy(model.preprocess(images)), rtol=1e-6)  # XLA: x * (1/255)
    labelled = SupCon(small_encoder(), projection_dim=8, hidden_dim=16)  # images travel with their labels
    (x, labels), _, _, _, _ = fit_policy.fit_arguments(labelled, images, np.arange(16) % 2, 8, {"epochs": 1})
    assert x.dtype == np.float32 and np.array_equal(labels, np.arange(16) % 2)
    ranged = SimCLR(small_encoder(), projection_dim=8, hidden_dim=16, value_range=(0, 255))
    x, _, _, _, _ = fit_policy.fit_arguments(ranged, images, None, 8, {"epochs": 1})
    np.testing.assert_array_equal(x, images)  # a declared range keeps the values, now float32
    assert x.dtype == np.float32
    monkeypatch.setattr(fit_policy.backend, "process_count", lambda: 1)  # one worker: uint8 as given
    x, _, _, _, _ = fit_policy.fit_arguments(model, images, None, 8, {"epochs": 1})
    assert x.dtype == np.uint8
