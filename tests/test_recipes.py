"""The papers' optimiser recipes: every method has one, the built optimiser follows it, the docs show it."""

import math
import os

import keras
import numpy as np
import pytest

import keras_ssl
from keras_ssl.recipes import RECIPES, paper_optimizer, recipe_table

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "methods.md")


def _lr_at(optimizer, step):
    optimizer.iterations.assign(step)
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def test_every_cli_method_has_a_recipe_that_builds():
    assert set(RECIPES) == set(keras_ssl.methods.METHODS)
    for name in RECIPES:
        optimizer = paper_optimizer(name, 128, steps_per_epoch=3, epochs=2)
        assert _lr_at(optimizer, 6) >= 0.0
    with pytest.raises(ValueError, match="No paper recipe for method 'simclr2'"):
        paper_optimizer("simclr2", 256, 10, 10)
    with pytest.raises(ValueError, match="batch_size"):
        paper_optimizer("simclr", 0, 10, 10)


def test_simclr_and_dinov2_recipes_rates_and_semantics():
    # SimCLR's CIFAR recipe: LARS, lr 1.0 x 512 / 256 = 2.0, 10 warm-up epochs of 10 steps, cosine to 0 at step 2000.
    optimizer = paper_optimizer("simclr", 512, steps_per_epoch=10, epochs=200)
    assert type(optimizer) is keras_ssl.optimizers.LARS
    assert optimizer.lars_weight_decay == 1e-4 and optimizer.trust_coefficient == 1e-3 and not optimizer.clip
    expected = {0: 0.0, 50: 1.0, 100: 2.0, 1050: 1.0, 2000: 0.0}
    for step, lr in expected.items():
        assert _lr_at(optimizer, step) == pytest.approx(lr, abs=1e-6), step
    # DINOv2: 0.004 at batch 1024 by the square-root rule, AdamW (decoupled) 0.04, 10 warm-up epochs.
    optimizer = paper_optimizer("dinov2", 1024, steps_per_epoch=5, epochs=100)
    assert type(optimizer) is keras_ssl.optimizers.Adam
    assert optimizer.decoupled_weight_decay and optimizer.adam_weight_decay.start == 0.04
    peak = 0.004
    expected = {0: 0.0, 50: peak, 275: peak * 0.5 * (1 + math.cos(math.pi * 0.5)), 500: 0.0}
    for step, lr in expected.items():
        assert _lr_at(optimizer, step) == pytest.approx(lr, rel=1e-5, abs=1e-9), step


def test_sgd_recipes_decay_coupled_and_short_runs_warm_up_a_tenth():
    optimizer = paper_optimizer("simsiam", 512, steps_per_epoch=4, epochs=10)  # no warm-up in SimSiam
    assert type(optimizer) is keras_ssl.optimizers.SGD
    assert optimizer.coupled_weight_decay == 5e-4 and optimizer.momentum == 0.9
    assert not optimizer.exclude_bias_and_norm  # main_simsiam.py decays every parameter
    assert _lr_at(optimizer, 0) == pytest.approx(0.06)
    byol = paper_optimizer("byol", 256, steps_per_epoch=10, epochs=5)  # 10 warm-up epochs capped at 5 steps
    assert _lr_at(byol, 5) == pytest.approx(1.0) and _lr_at(byol, 4) == pytest.approx(0.8)
    # DeepCluster v2's cosine ends at min_lr 6e-4 (solo-learn), not 0.
    assert _lr_at(paper_optimizer("deepclusterv2", 256, 10, 20), 200) == pytest.approx(6e-4, rel=1e-5)


def test_docs_show_the_recipe_table():
    with open(DOCS) as f:
        assert recipe_table() in f.read(), (
            "docs/methods.md's recipe table differs from keras_ssl.recipes.recipe_table()"
        )


def _official_cosine(start, end, total, steps):
    """DINOv2's `CosineScheduler(start, end, total)[step]` (DINO's and iBOT's `cosine_scheduler`), in NumPy."""
    steps = np.asarray(steps)
    return np.where(steps >= total, end, end + 0.5 * (start - end) * (1 + np.cos(np.pi * steps / total)))


def test_vit_recipes_raise_the_weight_decay_along_the_official_cosine():
    steps = np.arange(0, 131, 5)
    # I-JEPA's and MSN's CosineWDSchedule steps once before each update: our recipes count as DINO does (as for
    # the rate), one step behind theirs; CosineWeightDecay(step_offset=1) is theirs (tests/test_optimizers.py).
    for name in ("ibot", "dinov2", "ijepa"):
        wd = paper_optimizer(name, 256, steps_per_epoch=5, epochs=20).adam_weight_decay  # a 100-step run
        got = keras.ops.convert_to_numpy(wd(steps))
        np.testing.assert_allclose(got, _official_cosine(0.04, 0.4, 100, steps), atol=1e-6, err_msg=name)
    # MSN's msn_train.py (init_opt): both cosines span T_max = int(1.25 * num_epochs * iterations_per_epoch).
    msn = paper_optimizer("msn", 1024, steps_per_epoch=5, epochs=20)
    got = keras.ops.convert_to_numpy(msn.adam_weight_decay(steps))
    np.testing.assert_allclose(got, _official_cosine(0.04, 0.4, 125, steps), atol=1e-6)
    # lr 2.5e-4 x 1024 / 256; 15 warm-up epochs capped at a tenth of the run (10 steps); at the run's end the
    # cosine over T_max - warm-up = 115 steps is at 90 / 115, not at 0.
    assert _lr_at(msn, 100) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 90 / 115)), rel=1e-5)
    for name, recipe in RECIPES.items():  # the others' decay stays a constant, as their sources'
        config = paper_optimizer(name, 256, steps_per_epoch=5, epochs=20).get_config()
        assert isinstance(config["weight_decay"], float) == (recipe.weight_decay_end is None), name
