"""iBOT / DINOv2 shared pieces vs float64 NumPy ports of the official code (numpy_refs_distillation).

Patch distillation and KoLeo: values and gradients. Sinkhorn: keras_ssl.losses.sinkhorn is DINOv2's
sinkhorn_knopp_teacher; masked_sinkhorn is its patch version. The masked patches gathered into
rows (DINOv2's buffers): masked_rows against collate's mask_indices_list and masks_weight, the loss on
them against forward_masked, BlockMasking.max_masked against collate's upperbound. Block masks: statistics over many
draws against the port of the official MaskingGenerator / iBOT loader loop, and exact properties.
"""

import math

import keras
import numpy as np
import numpy_refs_distillation as ref
import pytest
from conftest import grads
from keras import ops

import keras_ssl
from keras_ssl.layers.block_masks import (
    BlockMasking,
    block_masks,
    blockwise_masks,
    mask_targets,
    paper_masking,
)
from keras_ssl.layers.distillation_heads import masked_rows, take_rows
from keras_ssl.losses.distillation import gathered_patch_distillation, koleo, masked_patch_distillation, masked_sinkhorn


def to_np(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


def random_case(seed=0, batch=3, patches=5, k=6):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(batch, patches, k)).astype("float32")
    t = np.exp(2 * rng.normal(size=(batch, patches, k)))
    t = (t / t.sum(-1, keepdims=True)).astype("float32")
    masks = (rng.random((batch, patches)) < 0.5).astype("float32")
    masks[0, :2] = 1.0
    masks[-1] = 0.0  # an unmasked image counts 0 in the mean
    return s, t, masks


# ---------------------------------------------------------------- references on hand cases


def test_reference_patch_losses_on_a_hand_case_and_the_official_forms_agree():
    # K = 2, T = 1. Image 0: patch 0 masked, student [0, ln 3] -> p = [1/4, 3/4], teacher
    # [1/2, 1/2]: H = -(ln 1/4 + ln 3/4) / 2 = ln 4 - ln 3 / 2; patch 1 unmasked (any value).
    # Image 1: nothing masked, counts 0. Mean over images: H / 2.
    s = np.array([[[0.0, np.log(3)], [5.0, -5.0]], [[1.0, 2.0], [3.0, 4.0]]])
    t = np.full((2, 2, 2), 0.5)
    masks = np.array([[1, 0], [0, 0]])
    h = np.log(4) - np.log(3) / 2
    for loss in (ref.masked_patch_distillation, ref.masked_patch_distillation_dinov2_masked):
        np.testing.assert_allclose(loss(s, t, masks, 1.0), h / 2, rtol=1e-12)
    # iBOT's iBOTLoss / DINOv2's forward (dense) and DINOv2's forward_masked (gathered + masks_weight) agree.
    s, t, masks = random_case(1, batch=4, patches=7, k=5)
    dense = ref.masked_patch_distillation(s, t, masks, 0.1)
    np.testing.assert_allclose(ref.masked_patch_distillation_dinov2_masked(s, t, masks, 0.1), dense, rtol=1e-12)


def test_reference_koleo_and_sinkhorn_on_hand_cases():
    # Unit rows (row 0 given as [2, 0]: normalised first). Nearest by dot product: 0 <-> 1
    # (0.8), and 2 -> 1 (-0.8 beats -1). Distances sqrt(0.4), sqrt(0.4), sqrt(1.8^2 + 0.6^2) = sqrt(3.6).
    x = np.array([[2.0, 0.0], [0.8, 0.6], [-1.0, 0.0]])
    expected = -(2 * np.log(np.sqrt(0.4)) + np.log(np.sqrt(3.6))) / 3
    np.testing.assert_allclose(ref.koleo(x), expected, rtol=1e-6)  # eps moves it by ~1e-8
    # exp(scores / eps) = [[1, 1], [1, 3]] (rows: samples). One iteration by hand: / 6; prototype
    # rows to 1/2 each ([1/4, 1/4], [1/8, 3/8]); sample columns to 1/2 each; times B = 2:
    # sample 0 -> [2/3, 1/3], sample 1 -> [2/5, 3/5].
    scores = 0.5 * np.log(np.array([[1.0, 1.0], [1.0, 3.0]]))
    q = ref.sinkhorn_knopp_teacher(scores, 0.5, n_iterations=1)
    np.testing.assert_allclose(q, [[2 / 3, 1 / 3], [2 / 5, 3 / 5]], rtol=1e-12)


class ScriptedRng:
    """Stands in for np.random.Generator with preset draws, to run the port by hand."""

    def __init__(self, uniforms, integers):
        self.uniforms, self.ints = list(uniforms), list(integers)

    def random(self):
        return self.uniforms.pop(0)

    def integers(self, low, high):
        value = self.ints.pop(0)
        assert low <= value < high
        return value


def test_reference_block_mask_on_a_hand_case():
    # 4 x 4 grid, target 6, min area 4, no cap. Attempt 1: area 4 + (6 - 4) * 0 = 4, aspect
    # exp(0) = 1 (u = 0.5 of a symmetric log range) -> a 2 x 2 block at (1, 2): 4 new <= 6, kept.
    # Round 2 (remaining 2): area 4 + (2 - 4) * 0 = 4 -> 2 x 2 at (1, 1): overlaps 2, adds 2, kept.
    rng = ScriptedRng([0.0, 0.5, 0.0, 0.5], [1, 2, 1, 1])
    stats = {}
    mask = ref.block_mask(rng, (4, 4), 6, 4, None, stats=stats)
    expected = np.zeros((4, 4), dtype=bool)
    expected[1:3, 1:4] = True
    np.testing.assert_array_equal(mask, expected)
    assert stats == {"attempts": 2, "blocks": 2}
    # A failed round ends the loop: area 4 with aspect 1 / 0.3 -> 4 x 1 rows (h = 4 is not < 4) ten times.
    rng = ScriptedRng([0.0, 1.0] * 10, [])
    assert not ref.block_mask(rng, (4, 4), 4, 4, None).any()


# ---------------------------------------------------------------- losses: values and gradients


def test_patch_loss_value_and_gradient_match_the_reference():
    s, t, masks = random_case(2)
    got = masked_patch_distillation(s, t, masks, student_temperature=0.1)
    np.testing.assert_allclose(float(got), ref.masked_patch_distillation(s, t, masks, 0.1), rtol=2e-5)
    grad_s, grad_t = grads(lambda a, b: masked_patch_distillation(a, b, masks, 0.1), s, t)
    analytic = ref.masked_patch_distillation_grad(s, t, masks, 0.1)
    numeric = ref.numeric_grad(lambda a: ref.masked_patch_distillation(a, t, masks, 0.1), s)
    np.testing.assert_allclose(analytic, numeric, atol=1e-7)  # the analytic reference itself
    np.testing.assert_allclose(grad_s, analytic, atol=2e-5)
    assert np.abs(grad_s[-1]).max() == 0 and np.abs(grad_s[masks == 0]).max() == 0
    assert np.abs(grad_t).max() == 0  # the teacher is a target
    assert float(masked_patch_distillation(s, t, np.zeros(s.shape[:2]), 0.1)) == 0.0
    with pytest.raises(ValueError, match="student_temperature"):
        masked_patch_distillation(s, t, np.ones(s.shape[:2]), 0.0)
    with pytest.raises(ValueError, match="rank"):
        masked_patch_distillation(s[0], t[0], np.ones(s.shape[1]), 0.1)


def test_koleo_value_and_gradient_match_the_reference():
    rng = np.random.default_rng(4)
    x = (3 * rng.normal(size=(6, 4))).astype("float32")
    np.testing.assert_allclose(float(koleo(x)), ref.koleo(x), rtol=1e-5)
    (got,) = grads(koleo, x)
    numeric = ref.numeric_grad(ref.koleo, x)
    np.testing.assert_allclose(got, numeric, atol=2e-5 * np.abs(numeric).max())
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], "float32")  # d = |eps| -> -log(~2.7e-8)
    np.testing.assert_allclose(float(koleo(x)), ref.koleo(x), rtol=1e-4)
    assert np.isfinite(grads(koleo, x)[0]).all()
    with pytest.raises(ValueError, match="rank"):
        koleo(np.ones(4))
    with pytest.raises(ValueError, match="batch size"):
        koleo(np.ones((1, 4)))


def test_sinkhorn_and_masked_sinkhorn_are_dinov2_sinkhorn_knopp_teacher():
    # DINOLoss.sinkhorn_knopp_teacher(t, teacher_temp) == keras_ssl.losses.sinkhorn(t, epsilon=teacher_temp).
    logits = np.random.default_rng(5).normal(size=(12, 7))
    for temperature in (0.04, 0.07, 1.0):
        got = keras_ssl.losses.sinkhorn(logits.astype("float32"), epsilon=temperature, iterations=3)
        expected = ref.sinkhorn_knopp_teacher(logits, temperature)
        np.testing.assert_allclose(to_np(got), expected, rtol=2e-4, atol=1e-6)
    # iBOTPatchLoss.sinkhorn_knopp_teacher on the gathered masked patches with B = n_masked_patches.
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(20, 5))
    mask = (rng.random(20) < 0.4).astype("float32")
    got = to_np(masked_sinkhorn(logits.astype("float32"), mask, epsilon=0.07, iterations=3))
    expected = ref.sinkhorn_knopp_teacher(logits[mask == 1], 0.07, num_samples=int(mask.sum()))
    np.testing.assert_allclose(got[mask == 1], expected, rtol=2e-4, atol=1e-6)
    assert np.abs(got[mask == 0]).max() == 0
    assert np.abs(to_np(masked_sinkhorn(logits, np.zeros(20), 0.07))).max() == 0  # nothing masked: no NaN


# ---------------------------------------------------------------- masked patches gathered (DINOv2's buffers)


def test_gathered_rows_are_the_collates_mask_indices_and_weights():
    rng = np.random.default_rng(15)
    masks = (rng.random((6, 10)) < 0.3).astype("float32")
    masks[2] = 0.0
    indices, weights = ref.collate_mask_indices(masks)
    bound = len(indices) + 5
    rows, got_weights = masked_rows(masks, bound)
    rows, got_weights = to_np(rows).astype(int), to_np(got_weights)
    np.testing.assert_array_equal(rows[: len(indices)], indices)  # index_select's order
    np.testing.assert_allclose(got_weights[: len(indices)], weights, rtol=1e-6)
    # Padding: unmasked patches, each once, weighing 0.
    assert (got_weights[len(indices) :] == 0).all() and (masks.reshape(-1)[rows[len(indices) :]] == 0).all()
    assert len(set(rows)) == bound
    tokens = rng.normal(size=(6, 10, 3)).astype("float32")
    np.testing.assert_array_equal(to_np(take_rows(tokens, rows)), tokens.reshape(-1, 3)[rows])


def test_gathered_patch_loss_is_forward_masked_with_the_dense_gradient():
    s, t, masks = random_case(3, batch=4, patches=7, k=5)
    rows, weights = masked_rows(masks, int(masks.sum()) + 3)

    def loss(a, b):
        return gathered_patch_distillation(take_rows(a, rows), take_rows(b, rows), weights, 4, 0.1)

    expected = ref.masked_patch_distillation_dinov2_masked(s, t, masks, 0.1)
    np.testing.assert_allclose(float(loss(s, t)), expected, rtol=2e-5)
    grad_s, grad_t = grads(loss, s, t)
    np.testing.assert_allclose(grad_s, ref.masked_patch_distillation_grad(s, t, masks, 0.1), atol=2e-5)
    assert np.abs(grad_t).max() == 0
    with pytest.raises(ValueError, match="rank"):
        gathered_patch_distillation(s, t, weights, 4)


def test_max_masked_is_the_collates_upperbound_and_bounds_the_draws():
    dinov2 = BlockMasking(14, **paper_masking("dinov2", 14))
    for batch in (5, 16, 64, 256):
        official, ours = ref.collate_upperbound(batch, 196), dinov2.max_masked(batch)
        assert official <= ours <= official + batch // 2, batch  # collate rounds each term down
        assert int(to_np(dinov2.max_masked(ops.convert_to_tensor(batch)))) == ours  # a batch unknown when traced
    assert BlockMasking(14, **paper_masking("ibot", 14)).max_masked(16) == 16 * 98  # any image up to 0.5 * N
    assert BlockMasking(4, mask_probability=0.0).max_masked(8) == 1  # nothing masked: one padding row
    # Every image at its largest target: the draws come close to the bound and never pass it.
    for spread in ("independent", "linspace"):
        layer = BlockMasking(6, mask_ratio=(0.5, 0.5), mask_probability=1.0, spread=spread, min_num_patches=1, seed=3)
        total = to_np(layer(np.zeros((32, 1)))).sum()
        assert layer.max_masked(32) == 32 * 18 and 0.9 * 32 * 18 <= total <= 32 * 18, (spread, total)


# ---------------------------------------------------------------- block masks


def components(mask):
    """4-connected components of a 2-D bool mask."""
    seen = np.zeros_like(mask)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        seen[start] = True
        while stack:
            i, j = stack.pop()
            for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if 0 <= a < mask.shape[0] and 0 <= b < mask.shape[1] and mask[a, b] and not seen[a, b]:
                    seen[a, b] = True
                    stack.append((a, b))
    return count


def shape_stats(masks, grid):
    masks = np.asarray(masks, bool).reshape(-1, *grid)
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1))).astype(int)
    edges = np.abs(np.diff(padded, axis=1)).sum((1, 2)) + np.abs(np.diff(padded, axis=2)).sum((1, 2))
    return {
        # Many small blocks have more edge than few large ones: the most sensitive to the area draw.
        "half_perimeter": edges / 2.0,
        "count": masks.sum((1, 2)).astype(float),
        "rows": masks.any(2).sum(1).astype(float),
        "cols": masks.any(1).sum(1).astype(float),
        "components": np.array([components(m) for m in masks], float),
        # Where the blocks land: randint's inclusive end reaches the last row and column.
        "last_row_col": (masks[:, -1, :].sum(1) + masks[:, :, -1].sum(1)).astype(float),
    }


def assert_same_distribution(ours, theirs, name, quantile_tolerance=2.0):
    se = math.sqrt(ours.var() / len(ours) + theirs.var() / len(theirs))
    assert abs(ours.mean() - theirs.mean()) < 5 * se + 1e-3, (name, ours.mean(), theirs.mean())
    for q in (10, 30, 70, 90):  # not the median: the full pipelines leave half the images unmasked
        a, b = np.percentile(ours, q), np.percentile(theirs, q)
        assert abs(a - b) <= quantile_tolerance, (name, q, a, b)


# grid, target, min_num_patches, max_num_patches: DINOv2-style (integer target, capped blocks) and
# iBOT-style (fractional target ratio * N, min area (min(h, w) // 3) ** 2, no cap).
BLOCK_CASES = {
    "dinov2_8x8": ((8, 8), 20.0, 4, 32),
    "ibot_8x8": ((8, 8), 0.3 * 64, 4, None),
    "dinov2_14x14": ((14, 14), 90.0, 4, 98),
}


@pytest.mark.parametrize("case", list(BLOCK_CASES))
def test_block_masks_match_the_official_generator(case):
    grid, target, low, cap = BLOCK_CASES[case]
    n = 1500 if grid[0] < 10 else 600
    rng = np.random.default_rng(7)
    theirs = shape_stats([ref.block_mask(rng, grid, target, low, cap) for _ in range(n)], grid)
    masks = to_np(blockwise_masks(np.full(n, target, "float32"), grid, low, cap, seed=keras.random.SeedGenerator(8)))
    assert set(np.unique(masks)) <= {0.0, 1.0}
    ours = shape_stats(masks, grid)
    assert ours["count"].max() <= math.floor(target)  # never more than asked
    for name in ours:
        assert_same_distribution(ours[name], theirs[name], f"{case}:{name}")


def test_block_masks_edge_cases_presets_and_argument_checks():
    masks = to_np(blockwise_masks(np.array([0.0, 0.0, 6.0], "float32"), (3, 5), min_num_patches=2, seed=0))
    assert masks.shape == (3, 15)
    assert masks[:2].sum() == 0 and masks[2].sum() <= 6
    with pytest.raises(ValueError, match="max_attempts"):
        blockwise_masks(np.ones(2), 4, max_attempts=0)
    assert paper_masking("dinov2", 14)["max_num_patches"] == 98
    assert paper_masking("ibot", (14, 14))["min_num_patches"] == 16
    with pytest.raises(ValueError):
        paper_masking("mae", 14)
    with pytest.raises(ValueError, match="mask_ratio"):
        BlockMasking(4, mask_ratio=(0.5, 0.1))
    with pytest.raises(ValueError, match="spread"):
        BlockMasking(4, spread="uniform")


def test_dinov2_targets_match_the_collate():
    num_patches, batch = 196, 16
    bins = np.floor(num_patches * np.linspace(0.1, 0.5, 9))
    seed = keras.random.SeedGenerator(9)
    ours = np.stack([to_np(mask_targets(batch, num_patches, seed=seed)) for _ in range(60)])
    for targets in ours:
        masked = np.sort(targets[targets > 0])
        assert len(masked) == 8  # exactly int(B * 0.5)
        assert (masked >= bins[:-1]).all() and (masked <= bins[1:]).all()  # one per linspace bin
    assert np.abs((ours > 0).mean(0) - 0.5).max() < 0.2  # shuffled: every position masked half the time
    rng = np.random.default_rng(10)
    theirs = np.stack([ref.dinov2_targets(rng, batch, num_patches) for _ in range(200)])
    assert_same_distribution(ours[ours > 0], theirs[theirs > 0], "dinov2 targets", quantile_tolerance=4)
    odd = to_np(mask_targets(5, 64, mask_probability=0.5, seed=1))
    assert (odd > 0).sum() == 2  # int(5 * 0.5)


def test_ibot_targets_match_the_loader():
    num_patches, n = 196, 4000
    ours = to_np(mask_targets(n, num_patches, spread="independent", seed=11))
    rng = np.random.default_rng(12)
    theirs = np.array([ref.ibot_target(rng, num_patches) for _ in range(n)])
    assert abs((ours > 0).mean() - (theirs > 0).mean()) < 0.05
    assert_same_distribution(ours[ours > 0], theirs[theirs > 0], "ibot targets", quantile_tolerance=4)
    assert ours.min() >= 0 and ours[ours > 0].min() >= 0.1 * num_patches - 1e-3
    assert ours.max() <= 0.5 * num_patches + 1e-3
    fixed = to_np(mask_targets(8, 64, mask_ratio=(0.3, 0.3), mask_probability=1.0, spread="independent", seed=0))
    np.testing.assert_allclose(fixed, 0.3 * 64, rtol=1e-6)  # main_ibot.py's bare defaults


@pytest.mark.parametrize("method", ["dinov2", "ibot"])
def test_full_sampler_matches_the_official_pipeline(method):
    grid, n = (8, 8), 1600
    options = paper_masking(method, grid)
    ours = shape_stats(to_np(block_masks(n, grid, seed=keras.random.SeedGenerator(13), **options)), grid)
    rng = np.random.default_rng(14)
    if method == "dinov2":
        targets = np.concatenate([ref.dinov2_targets(rng, 16, 64) for _ in range(n // 16)])
    else:
        targets = np.array([ref.ibot_target(rng, 64) for _ in range(n)])
    cap = options.get("max_num_patches")
    theirs = shape_stats([ref.block_mask(rng, grid, t, options["min_num_patches"], cap) for t in targets], grid)
    for name in ours:
        assert_same_distribution(ours[name], theirs[name], f"{method}:{name}")


def test_layer_in_a_compiled_predict_replays_with_its_seed_and_round_trips():
    def model(seed):
        inputs = keras.Input((16, 16, 3))
        return keras.Model(inputs, BlockMasking(4, seed=seed, **paper_masking("dinov2", 4))(inputs))

    x = np.zeros((16, 16, 16, 3), "float32")
    first = model(3).predict(x, batch_size=8, verbose=0)
    again = model(3).predict(x, batch_size=8, verbose=0)
    np.testing.assert_array_equal(first, again)  # a resume replays the masks
    assert first.shape == (16, 16)
    for batch in (first[:8], first[8:]):
        assert (batch.sum(1) > 0).sum() == 4 and batch.sum(1).max() <= 8
    assert not np.array_equal(first[:8], first[8:])  # new masks at every step
    layer = BlockMasking(4, seed=3, **paper_masking("ibot", 4))
    clone = BlockMasking.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
