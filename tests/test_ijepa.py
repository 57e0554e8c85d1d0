"""I-JEPA: masks, positions, predictor and loss against NumPy ports of the official code; EMA; harness."""

import keras
import numpy as np
import pytest
from conftest import grads, random_images, small_encoder
from keras import ops
from numpy_refs_ijepa import MaskCollator, get_2d_sincos_pos_embed, ijepa_loss, layer_norm

from keras_ssl.backbones.predictor import JEPAPredictor
from keras_ssl.backbones.transformer import sincos_positions
from keras_ssl.backbones.vit import vit
from keras_ssl.layers.multiblock_masks import block_size, multiblock_masks
from keras_ssl.losses.predictive import ijepa
from keras_ssl.methods.ijepa import IJEPA

TARGET = dict(scale=(0.15, 0.2), aspect=(0.75, 1.5))
CONTEXT = dict(scale=(0.85, 1.0), aspect=(1.0, 1.0))


def np_(x):
    return ops.convert_to_numpy(x)


def make_model(**kw):
    encoder = vit(image_size=16, patch_size=4, dim=32, depth=1, heads=2, num_registers=kw.pop("num_registers", 0))
    return IJEPA(encoder, predictor_dim=16, predictor_depth=1, predictor_heads=2, seed=1, **kw)


# ------------------------------------------------------------------ positions
def test_sincos_positions_match_the_official_table():
    # Hand case, dim 4: one frequency (1), [sin, cos] of the column, then of the row.
    np.testing.assert_allclose(sincos_positions(4, 3)[1], [np.sin(1), np.cos(1), 0, 1], atol=1e-7)
    np.testing.assert_allclose(sincos_positions(4, 3)[3], [0, 1, np.sin(1), np.cos(1)], atol=1e-7)
    for dim, grid in ((8, 4), (16, 14), (384, 16)):
        np.testing.assert_allclose(sincos_positions(dim, grid), get_2d_sincos_pos_embed(dim, grid), atol=1e-6)
    predictor = JEPAPredictor(14, 32, dim=16, depth=1, heads=2)
    np.testing.assert_allclose(predictor.positions, get_2d_sincos_pos_embed(16, 14), atol=1e-6)


# ------------------------------------------------------------------ masks
@pytest.mark.parametrize("grid", [14, 16])
def test_block_size_is_the_official_formula(grid):
    u = np.random.default_rng(0).random(4000).astype("float32")
    official = MaskCollator(grid)
    for ranges in (TARGET, CONTEXT):
        h, w = (np_(a) for a in block_size(u, grid, ranges["scale"], ranges["aspect"]))
        expected = np.array([official.sample_block_size(float(v), ranges["scale"], ranges["aspect"]) for v in u])
        agree = (h == expected[:, 0]) & (w == expected[:, 1])
        assert agree.mean() > 0.999, agree.mean()


def draw(batches=30, batch_size=32, grid=14):
    seed = keras.random.SeedGenerator(3)
    return [{k: np_(v) for k, v in multiblock_masks(batch_size, grid, seed=seed).items()} for _ in range(batches)]


@pytest.fixture(scope="module")
def drawn():
    return draw()


def official_draws(batches=400, batch_size=32, grid=14):
    collator = MaskCollator(grid, seed=0)
    return [collator(batch_size) for _ in range(batches)]


def test_masks_have_the_official_statistics(drawn):
    n, official = 196, official_draws()
    ours_scale = np.array([m["target_valid"][0, 0].sum() / n for m in drawn])
    ref_scale = np.array([p[0].shape[1] / n for _, p in official])
    ours_ctx = np.array([m["context_valid"][0].sum() / n for m in drawn])
    ref_ctx = np.array([e[0].shape[1] / n for e, _ in official])

    def aspect(masks):  # rows / columns of each image's first target block
        grid = masks.reshape(-1, 14, 14)
        return grid.any(axis=2).sum(axis=1) / grid.any(axis=1).sum(axis=1)

    ours_aspect = np.concatenate([aspect(m["target_mask"][:, 0]) for m in drawn])
    ref_aspect = []
    for _, preds in official:
        onehot = np.zeros((preds[0].shape[0], 196), bool)
        np.put_along_axis(onehot, preds[0], True, axis=1)
        ref_aspect.append(aspect(onehot))
    ref_aspect = np.concatenate(ref_aspect)
    # Sizes are drawn once per batch: 30 draws of ours, so means (3 standard errors) and the support.
    assert abs(ours_scale.mean() - ref_scale.mean()) < 0.007, (ours_scale.mean(), ref_scale.mean())
    assert abs(ours_aspect.mean() - ref_aspect.mean()) < 0.15, (ours_aspect.mean(), ref_aspect.mean())
    assert abs(ours_ctx.mean() - ref_ctx.mean()) < 0.03, (ours_ctx.mean(), ref_ctx.mean())
    collator = MaskCollator(14)
    support = {collator.sample_block_size(u, TARGET["scale"], TARGET["aspect"]) for u in np.linspace(0, 1, 2001)}
    rows = np.concatenate([m["target_mask"].reshape(-1, 14, 14).any(axis=2).sum(axis=1) for m in drawn])
    cols = np.concatenate([m["target_mask"].reshape(-1, 14, 14).any(axis=1).sum(axis=1) for m in drawn])
    assert set(zip(rows.tolist(), cols.tolist())) <= support
    # Where target blocks fall: the per-patch frequency over every block of every image.
    ours_cover = np.concatenate([m["target_mask"].reshape(-1, n) for m in drawn]).mean(axis=0)
    ref_cover = np.zeros(n)
    for _, preds in official:
        for p in preds:
            np.add.at(ref_cover, p.ravel(), 1.0)
    ref_cover /= sum(len(preds) * preds[0].shape[0] for _, preds in official)
    assert np.abs(ours_cover - ref_cover).max() < 0.05, np.abs(ours_cover - ref_cover).max()


def test_masks_exact_properties(drawn):
    seed = keras.random.SeedGenerator(4)
    own = [{k: np_(v) for k, v in multiblock_masks(32, 14, common_context=False, seed=seed).items()} for _ in range(3)]
    for m in own:  # each image keeps its whole context block minus the targets: no common count
        counts = m["context_valid"].sum(axis=1)
        np.testing.assert_array_equal(counts, m["context_mask"].sum(axis=1))
        assert len(set(counts.tolist())) > 1
        assert (m["context_mask"] | m["target_mask"].any(axis=1)).reshape(32, 14, 14)[:, :13, :13].all()
    for m in drawn + own:
        context, targets = m["context_mask"], m["target_mask"]
        assert targets.shape == (32, 4, 196) and m["target_ids"].shape == (32, 4, 56)
        assert not (context[:, None] & targets).any()  # context and targets never overlap
        # Every target block is an h x w rectangle, the same size for the batch; ids list it in raster order.
        sizes = targets.sum(axis=2)
        assert (sizes == sizes[0, 0]).all() and (m["target_valid"].sum(axis=2) == sizes).all()
        ids = np.where(m["target_valid"], m["target_ids"], -1)
        for b in range(32):
            for j in range(4):
                np.testing.assert_array_equal(ids[b, j][ids[b, j] >= 0], np.flatnonzero(targets[b, j]))
            np.testing.assert_array_equal(m["context_ids"][b][m["context_valid"][b]], np.flatnonzero(context[b]))
        # The last row and column are never used, as officially (the context block is the 13 x 13
        # square at the top left at this grid, and target corners never reach the last row).
        both = (context | targets.any(axis=1)).reshape(32, 14, 14)
        assert not both[:, 13].any() and not both[:, :, 13].any()


# ------------------------------------------------------------------ loss
def official_layout(pred, ids, k):
    """Our `(B, M, K, D)` predictions and `(B, M, K)` ids -> the official block-major `z` and index list."""
    z = np.concatenate([pred[:, j, :k] for j in range(pred.shape[1])], axis=0)
    return z, [ids[:, j, :k] for j in range(ids.shape[1])]


def test_loss_hand_case():
    # One token [1, -1] (layer norm: itself / sqrt(1 + eps)), predicted as 0: each |d| < 1, 0.5 d^2.
    expected = 0.5 / (1 + 1e-5)
    h, z, ids = np.array([[[1.0, -1.0]]]), np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1), "int32")
    assert ijepa_loss(z[:, 0], h, [ids[:, 0]]) == pytest.approx(expected, rel=1e-12)
    assert float(ijepa(z.astype("float32"), h.astype("float32"), ids)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["smooth_l1", "l2"])
def test_loss_and_gradients_match_official(kind):
    rng = np.random.default_rng(0)
    b, n, m, k, pad, d = 3, 9, 2, 3, 2, 4
    tokens = (rng.normal(size=(b, n, d)) * 2).astype("float32")
    pred = (rng.normal(size=(b, m, k + pad, d)) * 1.5).astype("float32")
    ids = rng.integers(0, n, size=(b, m, k + pad)).astype("int32")
    valid = np.arange(k + pad)[None, None] < k
    valid = np.broadcast_to(valid, ids.shape)
    z, masks = official_layout(pred, ids, k)
    expected = ijepa_loss(z, tokens, masks, kind)
    assert float(ijepa(pred, tokens, ids, valid, loss=kind)) == pytest.approx(expected, rel=1e-5)
    # Padding never counts, whatever it holds.
    other = pred.copy()
    other[:, :, k:] = 100.0
    assert float(ijepa(other, tokens, ids, valid, loss=kind)) == pytest.approx(expected, rel=1e-5)

    g_pred, g_tokens = grads(lambda p, t: ijepa(p, t, ids, valid, loss=kind), pred, tokens)
    diff = z - np.concatenate([layer_norm(tokens.astype(np.float64))[np.arange(b)[:, None], mk] for mk in masks])
    dz = (np.clip(diff, -1, 1) if kind == "smooth_l1" else 2 * diff) / diff.size
    expected_pred = np.zeros(pred.shape)
    for j in range(m):
        expected_pred[:, j, :k] = dz[j * b : (j + 1) * b]
    np.testing.assert_allclose(g_pred, expected_pred, atol=1e-6)
    # The tokens' gradient (through the layer norm) by central differences of the float64 reference.
    t64, eps, numeric = tokens.astype(np.float64), 1e-6, np.zeros(tokens.shape)
    for idx in np.ndindex(tokens.shape):
        up, down = t64.copy(), t64.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (ijepa_loss(z, up, masks, kind) - ijepa_loss(z, down, masks, kind)) / (2 * eps)
    np.testing.assert_allclose(g_tokens, numeric, atol=2e-5)


# ------------------------------------------------------------------ predictor
def test_predictor_ignores_padding_and_predicts_each_block_on_its_own():
    # The official predictor has no padding and runs each block on its own (context + that
    # block's mask tokens): changing the padding or the other blocks must change nothing.
    rng = np.random.default_rng(1)
    predictor = JEPAPredictor(4, 8, dim=8, depth=2, heads=2)
    context = rng.normal(size=(2, 6, 8)).astype("float32")
    context_ids = np.stack([rng.permutation(16)[:6] for _ in range(2)]).astype("int32")
    targets = rng.integers(0, 16, size=(2, 3, 5)).astype("int32")
    c_valid = np.broadcast_to(np.arange(6) < 4, (2, 6))
    t_valid = np.broadcast_to(np.arange(5) < 3, targets.shape)
    padded = np_(predictor(context, context_ids, c_valid, targets, t_valid))
    context2, context_ids2, targets2 = context.copy(), context_ids.copy(), targets.copy()
    context2[:, 4:] = 9.0
    context_ids2[:, 4:] = context_ids[:, :2]
    targets2[..., 3:] = 0
    targets2 = targets2[:, [2, 0, 1]]  # the other blocks move: each block's output must not
    other = np_(predictor(context2, context_ids2, c_valid, targets2, t_valid))
    np.testing.assert_allclose(other[:, [1, 2, 0], :3], padded[..., :3, :], atol=1e-5)
    assert np.abs(other[:, [1, 2, 0], 3:] - padded[..., 3:, :]).max() > 1e-3  # (the padding did change)


# ------------------------------------------------------------------ method
def test_ema_target_changes_only_by_ema_on_a_linear_schedule():
    model = make_model(momentum=0.9, momentum_end=0.9)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = random_images(8)
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(
            ([np.array(w) for w in model.encoder.weights], [np.array(w) for w in model.target_encoder.weights])
        )
    )
    model.fit(x, batch_size=8, epochs=2, verbose=0, callbacks=[record])
    (online, target), _ = seen
    # The step's update happens first, from the weights the last step left.
    for o, t, new in zip(online, target, model.target_encoder.weights):
        np.testing.assert_allclose(np.array(new), 0.9 * t + 0.1 * o, rtol=1e-5, atol=1e-6)
    assert not any(w.trainable for w in model.target_encoder.weights)
    # The official schedule is linear in the step, not the engine's cosine.
    model.set_momentum_schedule(0.996, 1.0)
    model.total_steps.assign(100)
    model.step.assign(25)
    assert float(model.current_momentum()) == pytest.approx(0.997, abs=1e-6)


def test_options_are_checked():
    with pytest.raises(TypeError, match="ViT"):
        IJEPA(small_encoder())
    with pytest.raises(ValueError, match="loss"):
        make_model(loss="l1")
