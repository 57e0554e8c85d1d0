"""The papers' optimiser recipes: every method has one, the built optimiser follows it, the docs show it."""

import math
import os

import keras
import numpy as np
import pytest
from numpy_refs_schedules import (
    ijepa_cosine_wd_schedule,
    official_cosine_scheduler,
    official_warmup_cosine_stepped,
    simmim_multistep_rates,
)

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
    # DINOv2: 0.004 at batch 1024 by the square-root rule, AdamW (decoupled) 0.04, 10 warm-up epochs (linspace).
    optimizer = paper_optimizer("dinov2", 1024, steps_per_epoch=5, epochs=100)
    assert type(optimizer) is keras_ssl.optimizers.Adam
    assert optimizer.decoupled_weight_decay and optimizer.adam_weight_decay.start == 0.04
    peak, final = 0.004, 1e-6  # min_lr 1e-6
    expected = {0: 0.0, 50: peak, 275: final + (peak - final) * 0.5 * (1 + math.cos(math.pi * 0.5)), 500: final}
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


def _schedule(optimizer):
    return keras.saving.deserialize_keras_object(optimizer.get_config()["learning_rate"])


# Each at the batch its source quotes, where its absolute min_lr / start_lr are exact; 20 epochs of 5 steps
# (warm-ups capped at a tenth of the run: 10 steps). The references are the official schedulers, transcribed.
VIT_SCHEDULES = {
    "dino": (256, lambda: (official_cosine_scheduler(0.03, 1e-6, 100, 10), None)),
    "ibot": (
        256,
        lambda: (official_cosine_scheduler(5e-4, 1e-6, 100, 10), official_cosine_scheduler(0.04, 0.4, 100, 0)),
    ),
    "dinov2": (
        1024,
        lambda: (official_cosine_scheduler(4e-3, 1e-6, 100, 10), official_cosine_scheduler(0.04, 0.4, 100, 0)),
    ),
    # I-JEPA and MSN step their schedulers before each update; MSN's span T_max = int(1.25 * epochs * ipe).
    "ijepa": (
        2048,
        lambda: (
            official_warmup_cosine_stepped(2e-4, 1e-3, 1e-6, 10, 100, 100),
            ijepa_cosine_wd_schedule(0.04, 0.4, 100, 100),
        ),
    ),
    "msn": (
        1024,
        lambda: (
            official_warmup_cosine_stepped(2e-4, 1e-3, 1e-6, 10, 125, 100),
            ijepa_cosine_wd_schedule(0.04, 0.4, 125, 100),
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(VIT_SCHEDULES))
def test_dino_and_vit_recipes_follow_the_official_schedulers(name):
    batch, reference = VIT_SCHEDULES[name]
    want_lr, want_wd = reference()
    optimizer = paper_optimizer(name, batch, steps_per_epoch=5, epochs=20)
    steps = np.arange(100)
    got = keras.ops.convert_to_numpy(_schedule(optimizer)(steps))
    np.testing.assert_allclose(got, want_lr, rtol=2e-5, atol=1e-10)
    if want_wd is not None:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(optimizer.adam_weight_decay(steps)), want_wd, atol=1e-6)
    # clip_grad 3.0: DINO's and iBOT's utils.clip_gradients clip each parameter; DINOv2 and MSN a norm over many.
    clip = {"dino": (3.0, None), "ibot": (3.0, None), "dinov2": (None, 3.0), "msn": (None, 3.0), "ijepa": (None, None)}
    assert (optimizer.clipnorm, optimizer.global_clipnorm) == clip[name]


def test_the_other_recipes_keep_a_constant_decay():
    for name, recipe in RECIPES.items():  # the others' decay stays a constant, as their sources'
        config = paper_optimizer(name, 256, steps_per_epoch=5, epochs=20).get_config()
        assert isinstance(config["weight_decay"], float) == (recipe.weight_decay_end is None), name


def test_dinov2_recipe_decays_the_rate_layer_by_layer():
    encoder = keras_ssl.backbones.vit(image_size=8, patch_size=4, dim=8, depth=2, heads=2)
    model = keras_ssl.DINOv2(encoder, output_dim=16, hidden_dim=8, bottleneck_dim=4, seed=0)
    optimizer = paper_optimizer("dinov2", 256, steps_per_epoch=2, epochs=2, model=model)
    # ssl_default_config.yaml: layerwise_decay 0.9, patch_embed_lr_mult 0.2; the mask token with the embeddings.
    m = optimizer.lr_multipliers
    assert m["block_0"] == pytest.approx(0.81) and m["block_1"] == pytest.approx(0.9)
    assert m["patch_embed"] == pytest.approx(0.2 * 0.9**3) and m[model.mask_token.path] == pytest.approx(0.9**3)
    assert paper_optimizer("dinov2", 256, 2, 2).lr_multipliers == {}  # no model: no decay
    assert paper_optimizer("ibot", 256, 2, 2, model=model).lr_multipliers == {}  # iBOT's recipe has none


def test_simmim_recipe_is_its_official_multistep_schedule():
    # 80 epochs of 5 steps at batch 256: peak 1e-4 * 256 / 512, warm-up 8 epochs (a tenth of the run) from
    # WARMUP_LR scaled alike, x0.1 at 7/8 of the run (epoch 700 of 800), each rate set after the update before.
    optimizer = paper_optimizer("simmim", 256, steps_per_epoch=5, epochs=80)
    assert optimizer.global_clipnorm == 5.0 and optimizer.decoupled_weight_decay
    want = simmim_multistep_rates(5e-5, 2.5e-7, warmup_t=40, milestones=[350], gamma=0.1, updates=400)
    got = [_lr_at(optimizer, step) for step in range(400)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)
    assert got[350] == pytest.approx(5e-5) and got[351] == pytest.approx(5e-6)  # the drop, one update late
    schedule = keras_ssl.schedules.WarmupMultiStep(1.0, [5], warmup_steps=2, initial=0.5, step_offset=-1)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert [float(again(t)) for t in (0, 1, 2, 3, 5, 6)] == pytest.approx([0.5, 0.5, 0.75, 1.0, 1.0, 0.1])
    with pytest.raises(ValueError, match="must end by the first milestone"):
        keras_ssl.schedules.WarmupMultiStep(1.0, [5], warmup_steps=6)
