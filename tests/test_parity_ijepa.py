"""The parity benchmark's PyTorch I-JEPA reference (benchmarks/torch_vit_ijepa.py).

Given keras_ssl's weights and masks, the reference computes keras_ssl IJEPA's loss; its own loss
equals a NumPy computation of the definition; the official mask law and keras_ssl's share their
structure; the differences the reference found are shown by value. Run in the torch backend only.
"""

import os
import sys

import keras
import numpy as np
import pytest

if keras.backend.backend() != "torch":
    pytest.skip("the PyTorch reference is checked once, in the torch backend's run", allow_module_level=True)
torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import torch_vit_ijepa as ref

import keras_ssl
from keras_ssl.layers.multiblock_masks import block_size, multiblock_masks

VIT = dict(image_size=16, patch_size=4, dim=32, depth=2, heads=2, class_token=False, pool="mean")
VIT.update(positions="sincos", pixel_norm="imagenet")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _model(loss="smooth_l1", seed=0, **kwargs):
    options = dict(predictor_dim=16, predictor_depth=2, predictor_heads=2, num_targets=2, loss=loss, seed=seed)
    return keras_ssl.IJEPA(keras_ssl.backbones.vit(**VIT), **{**options, **kwargs})


def _perturbed(model, seed):
    """Every weight but the fixed positions moved off its init, the target encoder apart from the context's."""
    rng = np.random.default_rng(seed)
    for key, w in ref.keras_variables(model).items():
        if not key.endswith("positions"):
            w.assign(_numpy(w) + rng.normal(0.0, 0.1, tuple(w.shape)).astype("float32"))
    return model


def _keras_step(model, images):
    """keras_ssl's own forward and loss, the views the identity, recording the masks it draws."""
    drawn, masking = {}, model.masking

    def record(x):
        drawn.update(masking(x))
        return drawn

    object.__setattr__(model, "views", lambda x, training=True: [x])
    object.__setattr__(model, "masking", record)
    outputs = model.ssl_forward(model.views(model.preprocess(images)), training=False)
    loss, _ = model.compute_ssl_loss(outputs)
    return float(_numpy(loss)), outputs, {k: _numpy(v) for k, v in drawn.items()}


def _official_masks(masks):
    """keras_ssl's padded index lists -> the collator's: one context list, one list per target block."""
    keep = masks["context_valid"].sum(axis=1)
    assert len(set(keep.tolist())) == 1  # common_context: one length, as the collator's cut
    size = masks["target_valid"].sum(axis=2)
    assert len(set(size.ravel().tolist())) == 1  # one target size per batch
    enc = [torch.from_numpy(masks["context_ids"][:, : keep[0]].astype("int64"))]
    ids = masks["target_ids"][:, :, : size[0, 0]].astype("int64")
    return enc, [torch.from_numpy(ids[:, m]) for m in range(ids.shape[1])]


@pytest.mark.parametrize("loss", ["smooth_l1", "l2"])
def test_reference_loss_is_keras_ssl_ijepa_loss(loss):
    model = _perturbed(_model(loss), seed=1)
    images = np.random.default_rng(2).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    keras_loss, outputs, masks = _keras_step(model, images)
    # The context excludes every target, in raster order (the collator's torch.nonzero).
    enc, pred = _official_masks(masks)
    assert not set(enc[0][0].tolist()) & {i for p in pred for i in p[0].tolist()}
    assert all(np.all(np.diff(e.numpy(), axis=1) > 0) for e in enc)
    reference = ref.IJEPA.like(model)
    ref.from_keras(reference, model)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        ref_loss, z, h = reference(x, enc, pred)
    # The predictions, block-major in the reference, (B, M, K) in keras_ssl.
    k = pred[0].shape[1]
    keras_pred = _numpy(outputs["pred"])[:, :, :k].transpose(1, 0, 2, 3).reshape(z.shape)
    np.testing.assert_allclose(z.numpy(), keras_pred, atol=1e-5, rtol=0)
    assert float(ref_loss) == pytest.approx(keras_loss, rel=1e-5)


@pytest.mark.parametrize("loss", ["smooth_l1", "l2"])
def test_reference_loss_is_its_definition(loss):
    torch.manual_seed(0)
    reference = ref.IJEPA(16, 4, 3, 32, 2, 2, predictor_dim=16, predictor_depth=1, predictor_heads=2, loss=loss)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.3 * torch.randn_like(p))
    collator = ref.MaskCollator(4, pred_mask_scale=(0.15, 0.2), npred=2, min_keep=0)  # 1-patch targets occur on 4 x 4
    enc, pred = collator(3)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        value, z, h = reference(x, enc, pred)
        tokens = reference.target_encoder(x).numpy().astype("float64")
    normed = (tokens - tokens.mean(-1, keepdims=True)) / np.sqrt(tokens.var(-1, keepdims=True) + 1e-5)
    ids = np.concatenate([p.numpy() for p in pred])  # block-major
    targets = normed[np.tile(np.arange(3), len(pred))[:, None], ids]
    np.testing.assert_allclose(h.numpy(), targets, atol=1e-5, rtol=0)
    d = z.numpy().astype("float64") - targets
    if loss == "smooth_l1":
        assert (np.abs(d) < 1).any() and (np.abs(d) >= 1).any()  # both branches count
        expected = np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5).mean()
    else:
        expected = (d**2).mean()
    assert float(value) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("grid", [4, 8, 14])
def test_block_sizes_are_the_collators(grid):
    """One uniform draw sets scale and aspect; floor(N scale), rounded sides, at most grid - 1."""
    collator = ref.MaskCollator(grid)
    u = np.linspace(0.0, 1.0, 501, endpoint=False).astype("float32")
    ranges = [((0.15, 0.2), (0.75, 1.5)), ((0.85, 1.0), (1.0, 1.0))]
    for scale, aspect in ranges:
        h, w = (_numpy(t) for t in block_size(u, grid, scale, aspect))
        expected = np.array([collator.block_size(float(v), scale, aspect) for v in u])
        np.testing.assert_array_equal(np.stack([h, w], 1), np.maximum(expected, 1))


def test_mask_structure_is_the_collators():
    """Per batch one target size and one context size; the context excludes the targets and is cut
    to the batch's shortest; target corners from randint(0, H - h) (never the last row or column)."""
    grid, batch, steps = 8, 8, 20
    collator = ref.MaskCollator(grid, npred=4, min_keep=4)
    seed = keras.random.SeedGenerator(0)
    for _ in range(steps):
        enc, pred = collator(batch)
        assert len(enc) == 1 and len(pred) == 4 and len({p.shape for p in pred}) == 1
        for b in range(batch):
            assert not set(enc[0][b].tolist()) & {i for p in pred for i in p[b].tolist()}
        m = {k: _numpy(v) for k, v in multiblock_masks(batch, grid, num_targets=4, seed=seed).items()}
        assert len(set(m["target_valid"].sum(2).ravel().tolist())) == 1
        assert len(set(m["context_valid"].sum(1).tolist())) == 1
        assert not (m["context_mask"][:, None] & m["target_mask"]).any()
        assert np.array_equal(m["context_mask"].sum(1), m["context_valid"].sum(1))
    # The corner law: every target block lies inside the grid with its top-left row below grid - h.
    for _ in range(5):
        m = {k: _numpy(v) for k, v in multiblock_masks(64, grid, num_targets=4, seed=seed).items()}
        rows = np.where(m["target_mask"].reshape(64, 4, grid, grid).any(-1))
        top = np.array([rows[2][(rows[0] == b) & (rows[1] == j)].min() for b in range(64) for j in range(4)])
        h = m["target_mask"].reshape(64, 4, grid, grid).any(-1).sum(-1).ravel()
        assert np.all(top <= grid - h - 1)


def test_min_keep_differs_by_value():
    """The official re-draws contexts of <= min_keep patches; keras_ssl keeps them (docstring, 4)."""
    grid, batch = 8, 16
    collator = ref.MaskCollator(grid, npred=4, min_keep=8)  # the configs: 10, which no 8 x 8 target block passes
    lengths = [len(collator(batch)[0][0][0]) for _ in range(20)]
    assert min(lengths) > 8
    seed = keras.random.SeedGenerator(0)
    kept = np.concatenate(
        [_numpy(multiblock_masks(batch, grid, num_targets=4, seed=seed)["context_valid"]).sum(1) for _ in range(40)]
    )
    share = float(np.mean(kept <= 8))
    print(f"keras_ssl contexts with <= 8 patches, 8x8 grid, 4 targets: {share:.3f} (min {kept.min()}); official: 0")
    assert share > 0


def test_init_and_heads_are_the_officials():
    """helper.py's re-init undoes fix_init_weight: std 0.02 in every block, in the encoder and the
    predictor, as keras_ssl's (which divided by sqrt(2 (i + 1)) before 2026-12-07). The predictor
    takes the encoder's heads (keras_ssl: width / 32 at most before)."""
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    reference = ref.IJEPA(16, 4, 3, 32, 2, 2, predictor_dim=64, predictor_depth=2)
    official = [float(b.proj.weight.detach().std()) for b in reference.predictor.predictor_blocks]
    model = _model(predictor_dim=64, predictor_heads=None)
    ours = [float(np.std(_numpy(b.proj.kernel))) for b in model.predictor.blocks]
    encoder = [float(np.std(_numpy(b.fc2.kernel))) for b in model.encoder.blocks]
    np.testing.assert_allclose(official, [0.02, 0.02], rtol=0.1)
    np.testing.assert_allclose(ours, [0.02, 0.02], rtol=0.1)
    np.testing.assert_allclose(encoder, [0.02, 0.02], rtol=0.1)
    assert reference.predictor.predictor_blocks[0].heads == 2 and model.predictor.heads == 2  # the encoder's
    assert _model(predictor_dim=None, predictor_heads=None).predictor.heads == 2  # width 32, the encoder's 2


def test_keras_arrays_round_trip():
    reference = ref.IJEPA(16, 4, 3, 32, 2, 2, predictor_dim=16, predictor_depth=2, predictor_heads=2)
    arrays = ref.keras_arrays(reference)
    model = _model()
    assert set(arrays) == set(ref.keras_variables(model))
    ref.assign_keras(model, arrays)
    back = ref.IJEPA.like(model)
    ref.from_keras(back, model)
    for key, array in ref.keras_arrays(back).items():
        np.testing.assert_array_equal(array, arrays[key], err_msg=key)


def test_momentum_schedule_is_linear():
    values = ref.momentum_schedule((0.996, 1.0), steps=4)
    np.testing.assert_allclose(values, [0.996, 0.997, 0.998, 0.999, 1.0])
