"""Test configuration: the backend comes from KERAS_BACKEND (default: jax)."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield
    keras.backend.clear_session()


def data_dir():
    """Where the shared .npz datasets are (KERAS_SSL_DATA_DIR), or None."""
    d = os.environ.get("KERAS_SSL_DATA_DIR")
    return d if d and os.path.isdir(d) else None
