"""Exact resume: a run interrupted mid-epoch and resumed with BackupAndRestore
ends where the uninterrupted run ends (weights, targets, queues, seeds)."""

import keras
import numpy as np
import pytest
from conftest import CrashAt, random_images, small_encoder

import keras_ssl
from keras_ssl.layers import multi_crop_views


def _tiny_vit():
    return keras_ssl.backbones.vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2)


METHODS = {
    "simclr": lambda: keras_ssl.SimCLR(small_encoder(), hidden_dim=16, projection_dim=8, seed=3),
    "byol": lambda: keras_ssl.BYOL(small_encoder(), hidden_dim=16, projection_dim=8, seed=3),
    "moco": lambda: keras_ssl.MoCo(
        small_encoder(), queue_size=16, hidden_dim=16, projection_dim=8, num_splits=2, seed=3
    ),
    "nnclr": lambda: keras_ssl.NNCLR(small_encoder(), queue_size=16, hidden_dim=16, projection_dim=8, seed=3),
    "swav": lambda: keras_ssl.SwAV(
        small_encoder((None, None, 3)),
        input_shape=(16, 16, 3),
        num_prototypes=16,
        hidden_dim=16,
        projection_dim=8,
        queue_size=16,
        views=multi_crop_views(16, num_local=2, seed=4),
        freeze_prototypes_steps=2,
        seed=3,
    ),
    "dino": lambda: keras_ssl.DINO(
        small_encoder((None, None, 3)),
        input_shape=(16, 16, 3),
        output_dim=32,
        hidden_dim=16,
        bottleneck_dim=8,
        seed=3,
        views=multi_crop_views(16, num_local=2, seed=4),
    ),
    "ressl": lambda: keras_ssl.ReSSL(small_encoder(), queue_size=16, hidden_dim=16, projection_dim=8, seed=3),
    # Per-image state: a bank row and a cluster per image, and the k-means at each epoch's start.
    "deepclusterv2": lambda: keras_ssl.DeepClusterV2(
        small_encoder((None, None, 3)),
        input_shape=(16, 16, 3),
        num_samples=32,
        num_prototypes=(4, 4),
        projection_dim=8,
        hidden_dim=16,
        views=multi_crop_views(16, num_local=2, seed=4),
        seed=3,
    ),
    # The masked-image methods: each kind of mask is drawn in the step and must replay on resume.
    "ibot": lambda: keras_ssl.IBOT(
        _tiny_vit(),
        output_dim=16,
        hidden_dim=16,
        bottleneck_dim=8,
        views=multi_crop_views(16, num_local=2, seed=4),
        seed=3,
    ),
    "ijepa": lambda: keras_ssl.IJEPA(_tiny_vit(), predictor_dim=16, predictor_depth=1, predictor_heads=2, seed=3),
    "simmim": lambda: keras_ssl.SimMIM(_tiny_vit(), mask_patch_size=8, seed=3),
}


def build(name):
    keras.utils.set_random_seed(11)
    model = METHODS[name]()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


# The engine's resume (seed generators, momentum targets, a queue, split BatchNorm) on every backend;
# each method's own state (masks, banks, centres) is backend-free code: one backend each, in turn.
_EVERY_BACKEND = ("simclr", "byol", "moco")
RESUMED = [*_EVERY_BACKEND] + [
    name
    for i, name in enumerate(sorted(set(METHODS) - set(_EVERY_BACKEND)))
    if ("torch", "tensorflow", "jax")[i % 3] == keras.backend.backend()
]


@pytest.mark.parametrize("name", RESUMED)
def test_resume_with_random_augmentations_is_exact(name, tmp_path):
    x = random_images(32)
    fit = dict(batch_size=8, epochs=3, shuffle=False, verbose=0)
    reference = build(name)
    reference.fit(x, **fit)
    backup = lambda: keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    crashed = build(name)
    with pytest.raises(RuntimeError, match="simulated"):
        crashed.fit(x, callbacks=[backup(), CrashAt(epoch=1, batch=1)], **fit)
    resumed = build(name)
    history = resumed.fit(x, callbacks=[backup()], **fit)
    assert len(history.epoch) == 2, "did not resume from the backup"
    assert int(resumed.step) == int(reference.step) == 12
    for a, b in zip(reference.variables, resumed.variables):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-5, err_msg=a.path
        )


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_same_seed_gives_the_same_first_epoch_loss(name):
    x = random_images(32)
    first = [build(name).fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0).history["loss"][0] for _ in range(2)]
    assert np.isfinite(first[0]) and first[0] == pytest.approx(first[1], rel=1e-6, abs=1e-6)


def test_another_seed_gives_another_first_epoch_loss():
    x = random_images(32)
    losses = []
    for seed in (3, 4):
        keras.utils.set_random_seed(11)
        model = keras_ssl.SimCLR(small_encoder(), hidden_dim=16, projection_dim=8, seed=seed)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        losses.append(model.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0).history["loss"][0])
    assert abs(losses[0] - losses[1]) > 1e-4
