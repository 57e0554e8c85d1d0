"""Every method through the shared harness (`method_harness.run_method_test`), on tiny encoders.

What is particular to a method (its loss against a NumPy reference, its
heads and state) is in its own test file.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND, CAPTIONS, random_images, small_encoder, tiny_text_model
from method_harness import run_method_test

import keras_ssl
from keras_ssl.backbones import vit
from keras_ssl.views import dino_views, dinov2_views, ibot_views, msn_views, multi_crop_views


def _tiny_vit(**kw):
    return vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, **kw)


def _multi_crop_encoder():
    return small_encoder((None, None, 3))


# name -> (a tiny model, the data `fit` gets: two batches of 8)
MAKERS = {
    "simclr": lambda: keras_ssl.SimCLR(small_encoder(), hidden_dim=16, projection_dim=8, seed=1),
    "moco_v2": lambda: keras_ssl.MoCoV2(small_encoder(), hidden_dim=16, projection_dim=8, queue_size=12, seed=1),
    "moco_v3": lambda: keras_ssl.MoCoV3(small_encoder(), hidden_dim=16, projection_dim=8, seed=1),
    "byol": lambda: keras_ssl.BYOL(small_encoder(), hidden_dim=16, projection_dim=8, seed=1),
    "simsiam": lambda: keras_ssl.SimSiam(small_encoder(), projection_dim=32, prediction_dim=16, seed=1),
    "barlow_twins": lambda: keras_ssl.BarlowTwins(small_encoder(), projection_dim=32, seed=1),
    "vicreg": lambda: keras_ssl.VICReg(small_encoder(), projection_dim=32, seed=1),
    "nnclr": lambda: keras_ssl.NNCLR(small_encoder(), hidden_dim=16, projection_dim=8, queue_size=12, seed=1),
    "swav": lambda: keras_ssl.SwAV(
        _multi_crop_encoder(),
        input_shape=(16, 16, 3),
        num_prototypes=16,
        projection_dim=32,
        hidden_dim=16,
        queue_size=16,
        views=multi_crop_views(16, local_size=8, num_local=2, seed=10),
        seed=1,
    ),
    "dino": lambda: keras_ssl.DINO(
        _multi_crop_encoder(),
        input_shape=(16, 16, 3),
        output_dim=32,
        hidden_dim=16,
        bottleneck_dim=8,
        views=dino_views(16, local_size=8, num_local=2, seed=10),
        seed=1,
    ),
    "mae": lambda: keras_ssl.MAE(
        vit(image_size=16, patch_size=4, dim=32, depth=2, heads=2),
        decoder_dim=16,
        decoder_depth=1,
        decoder_heads=2,
        seed=1,
    ),
    "ibot": lambda: keras_ssl.IBOT(
        _tiny_vit(),
        views=ibot_views(16, local_size=8, num_local=2, seed=10),
        output_dim=24,
        hidden_dim=16,
        bottleneck_dim=8,
        shared_head=False,
        patch_output_dim=20,
        seed=1,
    ),
    "dinov2": lambda: keras_ssl.DINOv2(
        _tiny_vit(num_registers=2, layerscale=1e-5),
        views=dinov2_views(16, local_size=8, num_local=2, seed=10),
        output_dim=24,
        hidden_dim=16,
        bottleneck_dim=8,
        seed=1,
    ),
    # With registers and the paper's L2 (its own tests cover smooth-L1 without registers).
    "ijepa": lambda: keras_ssl.IJEPA(
        _tiny_vit(num_registers=1), predictor_dim=16, predictor_depth=1, predictor_heads=2, loss="l2", seed=1
    ),
    "simmim": lambda: keras_ssl.SimMIM(_tiny_vit(pool="mean"), mask_patch_size=8, seed=1),
    "msn": lambda: keras_ssl.MSN(
        _tiny_vit(),
        num_prototypes=16,
        hidden_dim=16,
        output_dim=8,
        views=msn_views(16, local_size=8, num_local=2, seed=10),
        seed=1,
    ),
    "fastsiam": lambda: keras_ssl.FastSiam(small_encoder(), num_views=3, projection_dim=32, prediction_dim=16, seed=1),
    "nnbyol": lambda: keras_ssl.NNBYOL(small_encoder(), queue_size=16, projection_dim=8, hidden_dim=16, seed=1),
    "nnsiam": lambda: keras_ssl.NNSiam(small_encoder(), queue_size=16, projection_dim=32, prediction_dim=16, seed=1),
    "ressl": lambda: keras_ssl.ReSSL(small_encoder(), queue_size=16, hidden_dim=16, projection_dim=8, seed=1),
    "mmcr": lambda: keras_ssl.MMCR(small_encoder(), num_views=3, projection_dim=8, hidden_dim=16, seed=1),
    "wmse": lambda: keras_ssl.WMSE(small_encoder(), projection_dim=4, hidden_dim=16, w_size=8, seed=1),
    "tico": lambda: keras_ssl.TiCo(small_encoder(), projection_dim=16, hidden_dim=32, seed=1),
    "vibcreg": lambda: keras_ssl.VIbCReg(small_encoder(), projection_dim=16, iternorm_groups=4, seed=1),
    # DCL's weighted variant, a `loss=` option: the step compiles with it on every backend.
    "simclr_dclw": lambda: keras_ssl.SimCLR(
        small_encoder(), hidden_dim=16, projection_dim=8, loss="dclw", temperature=0.1, seed=1
    ),
    "supcon": lambda: keras_ssl.SupCon(small_encoder(), hidden_dim=16, projection_dim=8, seed=1),
    "deepclusterv2": lambda: keras_ssl.DeepClusterV2(
        _multi_crop_encoder(),
        input_shape=(16, 16, 3),
        num_samples=16,
        num_prototypes=(8, 8, 8),
        projection_dim=8,
        hidden_dim=16,
        views=multi_crop_views(16, local_size=8, num_local=2, seed=3),
        seed=1,
    ),
    "siglip": lambda: tiny_text_model(keras_ssl.SigLIP, chunk_size=4),
    "slip": lambda: tiny_text_model(keras_ssl.SLIP, ssl_hidden_dim=16, ssl_projection_dim=8),
    "clip": lambda: tiny_text_model(keras_ssl.CLIP),
}


# Eager steps are slow to trace on JAX (each op compiles alone), and PyTorch's default step is
# already eager (no torch.compile on CPU): a separate eager run only tells on TensorFlow.
MODES = ("default", "eager") if BACKEND == "tensorflow" else ("default",)


def test_every_method_is_in_the_harness():
    names = {c.__name__ for c in keras_ssl.METHODS.values()} | {"CLIP", "SigLIP", "SLIP", "MoCoV2", "MoCoV3"}
    assert names == {type(make()).__name__ for make in MAKERS.values()}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_method_harness(name, tmp_path):
    keras.utils.set_random_seed(5)
    # CLIP trains on (images, texts), SupCon on (images, labels: two images per class)
    y = {"clip": np.array(CAPTIONS), "siglip": np.array(CAPTIONS), "slip": np.array(CAPTIONS)}.get(name)
    y = np.arange(16) % 8 if name == "supcon" else y
    initial = []

    def make():
        model = MAKERS[name]()
        initial.append(np.array(model.mask_token) if hasattr(model, "mask_token") else None)
        return model

    loaded = run_method_test(make, random_images(16), tmp_path, y=y, modes=MODES)
    if initial[0] is not None:  # a masked-image method's mask token learns
        assert np.abs(np.array(loaded.mask_token) - initial[0]).max() > 0


LOAD_SCRIPT = """
import json, sys, numpy as np, keras
import keras_ssl
paths = json.loads(sys.argv[1])
out = {}
for name, path in paths.items():
    model = keras.saving.load_model(path)
    x = np.load(path + ".npy")
    out[name] = np.asarray(model.encoder.predict(x, verbose=0)).tolist()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_every_method_saved_here_loads_on_another_backend(tmp_path):
    other = {"tensorflow": "jax", "jax": "torch", "torch": "tensorflow"}[BACKEND]
    paths, expected = {}, {}
    x = random_images(8).astype("float32") / 255.0
    for name, make in sorted(MAKERS.items()):
        model = make()
        model.build()
        path = str(tmp_path / f"{name}.keras")
        model.save(path)
        np.save(path + ".npy", x)
        paths[name], expected[name] = path, np.asarray(model.encoder.predict(x, verbose=0))
    done = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, json.dumps(paths)],
        env=dict(os.environ, KERAS_BACKEND=other),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for name in paths:
        np.testing.assert_allclose(np.array(got[name]), expected[name], atol=1e-4, err_msg=f"{name} on {other}")
