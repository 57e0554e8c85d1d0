"""Every docstring example of keras_ssl runs (doctest), on one backend.

Examples run in a small namespace (`docstring_namespace`): `keras`,
`keras_ssl`, `np`, `ops`, `os`, tiny images and labels, a tiny encoder and a
scratch directory. An example that prints a value must show it; one that
only illustrates a call must still run. Each example runs on one backend
(PyTorch; the backend package's on JAX): the numbers are the same on every
backend (the method tests check that), and one backend keeps the suite's
time down.
"""

import doctest
import importlib
import os
import pkgutil

import keras
import numpy as np
import pytest
from conftest import BACKEND, clear_session

import keras_ssl


def _modules():
    names = ["keras_ssl"]
    for info in pkgutil.walk_packages(keras_ssl.__path__, "keras_ssl."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return sorted(names)


def docstring_namespace(tmp_dir):
    """The names a docstring example may use, fresh for each module."""
    rng = np.random.default_rng(0)

    def images(n, size=16, channels=3):
        base = rng.integers(0, 256, size=(n, 1, 1, channels))
        noise = rng.integers(-40, 40, size=(n, size, size, channels))
        return np.clip(base + noise, 0, 255).astype("uint8")

    x_train, x_test = images(64), images(32)
    namespace = {
        "keras": keras,
        "keras_ssl": keras_ssl,
        "np": np,
        "ops": keras.ops,
        "os": os,
        "tmp_dir": str(tmp_dir),
        # 16x16 RGB uint8 images and 4-class labels
        "x_small": images(16),
        "x_train": x_train,
        "y_train": np.arange(64) % 4,
        "x_test": x_test,
        "y_test": np.arange(32) % 4,
        # float images in [0, 1], a batch of 8
        "images": (images(8) / 255.0).astype("float32"),
        # a tiny encoder of 16x16x3 images to 32 features
        "encoder": keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8),
    }
    return namespace


# Each example runs on one backend: the backend package's and keras_compat's examples show JAX's
# behaviour (their compile and kernel choices), every other example runs on PyTorch, whose eager
# steps need no compilation (a third of JAX's time for the same examples, measured).
_ON_JAX = ("keras_ssl.backend", "keras_ssl.keras_compat")
MODULES = [m for m in _modules() if m.startswith(_ON_JAX) == (BACKEND == "jax") and BACKEND in ("jax", "torch")]


def _tests(module):
    finder = doctest.DocTestFinder(exclude_empty=True)
    mod = importlib.import_module(module)
    # Only what the module defines itself: a re-exported object is tested where it lives.
    return [t for t in finder.find(mod, module) if t.examples and _defined_in(t, mod)]


def _defined_in(test, module):
    obj_name = test.name.split(".")[-1]
    if test.name == module.__name__:
        return True
    parts = test.name[len(module.__name__) + 1 :].split(".")
    obj = module
    for part in parts:
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    owner = getattr(obj, "__module__", module.__name__)
    return owner == module.__name__ or obj_name == "__init__"


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes a file writes it there
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures = []
    for test in _tests(module):
        test.globs = docstring_namespace(tmp_path)
        out = []
        result = runner.run(test, out=out.append, clear_globs=True)
        if result.failed:
            failures.append("".join(out))
        clear_session()
    assert not failures, "\n".join(failures)[-6000:]


def test_the_runner_fails_a_broken_example(tmp_path):
    # The test above must be able to fail: an example that raises, and one whose output differs.
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner()
    for source in (">>> keras_ssl.losses.nt_xent(1)\n", ">>> 1 + 1\n3\n"):
        test = parser.get_doctest(source, docstring_namespace(tmp_path), "broken", None, 0)
        assert runner.run(test, out=lambda _: None).failed == 1
