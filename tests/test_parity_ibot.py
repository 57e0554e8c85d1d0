"""The PyTorch iBOT and DINOv2 references (benchmarks/torch_vit_ibot.py), from the official code.

Given keras_ssl's weights (student and teacher apart, moved off their init), the same views and
the masks keras_ssl drew, each reference computes keras_ssl's loss, term by term; each reference
term equals a NumPy computation of the paper's definition; the differences found are shown by
value. Stochastic depth is off so both sides are deterministic. Run in the torch backend only.
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
import torch_vit_ibot as ref

import keras_ssl

SIZES = dict(image_size=16, patch_size=4, dim=32, depth=2, heads=2)
HEAD = dict(output_dim=24, hidden_dim=16, bottleneck_dim=8)
BATCH, LOCAL = 4, 2


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _model(cls, seed=0, **kwargs):
    vit = keras_ssl.backbones.vit(**SIZES, **{**cls.vit_options, "drop_path": 0.0})
    views = kwargs.pop("views", None) or keras_ssl.views.ibot_views(16, local_size=8, num_local=LOCAL)
    return cls(vit, **{**HEAD, **kwargs}, views=views, seed=seed)


def _perturbed(model, seed):
    """Every float weight moved off its init, the teacher's apart from the student's; random centres."""
    rng = np.random.default_rng(seed)
    layers = [model.encoder, model.teacher_encoder, model.head, model.teacher_head]
    layers += [getattr(model, n) for n in ("patch_head", "teacher_patch_head") if hasattr(model, n)]
    for w in [w for layer in layers for w in layer.weights] + [model.mask_token]:
        if "float" in str(w.dtype):
            w.assign(_numpy(w) + rng.normal(0.0, 0.1, tuple(w.shape)).astype("float32"))
    for w in (model.center, model.patch_center):
        w.assign(rng.normal(0.0, 0.3, tuple(w.shape)).astype("float32"))
    return model


def _views(seed, local=LOCAL):
    rng = np.random.default_rng(seed)
    return [rng.uniform(size=(BATCH, s, s, 3)).astype("float32") for s in [16, 16] + [8] * local]


def _nchw(images):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2)))


class _Recorded:
    """keras_ssl's `BlockMasking`, recording what it draws."""

    def __init__(self, masking):
        self.masking, self.drawn = masking, None

    def __call__(self, images):
        masks = self.masking(images)
        self.drawn = _numpy(masks).astype(bool)
        return masks

    def max_masked(self, batch):
        return self.masking.max_masked(batch)


def _keras_step(model, views):
    """keras_ssl's forward, loss and terms; the `(2 B, N)` masks drawn; the centres `update_state` gives
    (the model keeps the centres its loss used)."""
    recorded = _Recorded(model.masking)
    object.__setattr__(model, "masking", recorded)
    try:
        outputs = model.ssl_forward([keras.ops.convert_to_tensor(v) for v in views], training=True)
        loss, terms = model.compute_ssl_loss(outputs)
        before = [_numpy(w) for w in (model.center, model.patch_center)]
        model.update_state(outputs)
        after = [_numpy(w) for w in (model.center, model.patch_center)]
        for w, value in zip((model.center, model.patch_center), before):  # the step's loss used these
            w.assign(value)
    finally:
        object.__setattr__(model, "masking", recorded.masking)
    terms = {k: float(_numpy(v)) for k, v in terms.items()}
    return float(_numpy(loss)), terms, recorded.drawn, after


def _check_masks(masks):
    counts = masks.sum(axis=1)
    assert masks.shape == (2 * BATCH, 16) and (counts > 0).any() and (counts == 0).any()  # both kinds of image


def _ibot_reference(model, **kwargs):
    options = dict(out_dim=model.output_dim, patch_out_dim=model.patch_output_dim, hidden_dim=model.hidden_dim)
    options.update(bottleneck_dim=model.bottleneck_dim, nlcrops=LOCAL, teacher_temp=model.teacher_temperature)
    options.update(teacher_patch_temp=model.teacher_patch_temperature, warmup_teacher_temp_epochs=0)
    options.update(lambda1=model.cls_weight, lambda2=model.patch_weight, offset=0)
    module = ref.IBOT(ref.ViT.like(model.encoder), **{**options, **kwargs})
    ref.ibot_from_keras(module, model)
    return module


def _run_ibot(module, views, masks, epoch=0):
    torch_views = [_nchw(v) for v in views]
    masks = torch.from_numpy(masks).chunk(2)
    with torch.no_grad():
        return module(torch_views[:2], torch_views[2:], masks, epoch)


@pytest.mark.parametrize("options", [{}, {"cls_weight": 0.5, "patch_weight": 2.0, "teacher_temperature": 0.06}])
def test_reference_computes_keras_ssl_ibot_loss(options):
    model = _perturbed(_model(keras_ssl.IBOT, **options), seed=1)
    views = _views(2)
    loss, terms, masks, centres = _keras_step(model, views)
    _check_masks(masks)
    module = _ibot_reference(model)
    out = _run_ibot(module, views, masks)
    weights = (model.cls_weight, model.patch_weight)
    # iBOTLoss returns lambda-weighted terms; keras_ssl's terms are unweighted.
    assert float(out["cls"]) == pytest.approx(weights[0] * terms["cls"], rel=1e-5)
    assert float(out["patch"]) == pytest.approx(weights[1] * terms["patch"], rel=1e-5)
    assert float(out["loss"]) == pytest.approx(loss, rel=1e-5)
    # update_center, after the loss: the class tokens' and all patches' means.
    np.testing.assert_allclose(module.loss.center.numpy().ravel(), centres[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(module.loss.center2.numpy().ravel(), centres[1], rtol=1e-5, atol=1e-6)


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _cross_entropy(p, logits):
    """H(p, softmax(logits)) per row."""
    return -np.sum(p * _log_softmax(logits), axis=-1)


def _paper_ibot(student_cls, student_patch, teacher_cls, teacher_patch, masks, center, center2, temps):
    """iBOT (Zhou et al. 2022, eqs. 1-2 and Algorithm 1), float64: the [CLS] loss averaged over the
    (teacher global crop, other student crop) pairs, and the MIM loss, each global crop's masked
    patches against the teacher's outputs of the same unmasked crop, per image the mean over its
    masked patches; both teachers centred and sharpened."""
    tau_s, tau_t, tau_t2 = temps
    p = lambda t, c, tau: np.exp(_log_softmax((t - c) / tau))
    cls = [_cross_entropy(p(t, center, tau_t), s / tau_s).mean() for i, t in enumerate(teacher_cls)
           for v, s in enumerate(student_cls) if v != i]  # fmt: skip
    mim = []
    for s, t, m in zip(student_patch, teacher_patch, masks):
        ce = _cross_entropy(p(t, center2, tau_t2), s / tau_s)
        mim.append((np.sum(ce * m, axis=1) / np.maximum(m.sum(axis=1), 1)).mean())
    return np.mean(cls), np.mean(mim)


def test_reference_ibot_loss_is_the_papers():
    torch.manual_seed(0)
    vit = ref.ViT(**SIZES, pixel_norm="imagenet")
    module = ref.IBOT(vit, out_dim=24, patch_out_dim=24, hidden_dim=16, bottleneck_dim=8, nlcrops=LOCAL)
    module.loss.center = torch.randn(1, 24) * 0.3
    module.loss.center2 = torch.randn(1, 1, 24) * 0.3
    centres = module.loss.center.numpy().copy(), module.loss.center2.numpy().copy()
    masks = np.random.default_rng(3).uniform(size=(2 * BATCH, 16)) < 0.4
    masks[0] = False
    out = _run_ibot(module, _views(4), masks, epoch=5)  # mid warm-up
    f64 = lambda t: np.asarray(t, np.float64)
    student_cls = list(f64(torch.cat([out["student"][0], out["student_local_cls"]])).reshape(-1, BATCH, 24))
    temps = (0.1, module.loss.teacher_temp_schedule[5], module.loss.teacher_temp2_schedule[5])
    cls, mim = _paper_ibot(
        student_cls,
        f64(out["student"][1]).reshape(2, BATCH, 16, 24),
        f64(out["teacher"][0]).reshape(2, BATCH, 24),
        f64(out["teacher"][1]).reshape(2, BATCH, 16, 24),
        masks.reshape(2, BATCH, 16),
        *centres,
        temps,
    )
    assert temps[1:] == pytest.approx((0.04, 0.04 + 0.03 * 5 / 29))
    assert [float(out["cls"]), float(out["patch"])] == pytest.approx([cls, mim], rel=1e-5)


# ------------------------------------------------------------------ DINOv2


def _dinov2_reference(model, **kwargs):
    options = dict(out_dim=model.output_dim, patch_out_dim=model.patch_output_dim, hidden_dim=model.hidden_dim)
    options.update(bottleneck_dim=model.bottleneck_dim, separate_head=not model.shared_head, offset=0)
    options.update(centering=model.centering, koleo_loss_weight=model.koleo_weight)
    options.update(dino_loss_weight=model.cls_weight, ibot_loss_weight=model.patch_weight)
    module = ref.DINOv2(ref.ViT.like(model.encoder), **{**options, **kwargs})
    ref.dinov2_from_keras(module, model)
    return module


def _run_dinov2(module, views, masks, teacher_temp, upperbound=None):
    torch_views = [_nchw(v) for v in views]
    local = torch.cat(torch_views[2:]) if len(views) > 2 else None
    with torch.no_grad():
        return module(torch.cat(torch_views[:2]), local, torch.from_numpy(masks), teacher_temp, upperbound)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"centering": "centering", "shared_head": False, "patch_output_dim": 20, "koleo_weight": 0.3},
    ],
)
def test_reference_computes_keras_ssl_dinov2_loss(options):
    model = _perturbed(_model(keras_ssl.DINOv2, **options), seed=5)
    views = _views(6)
    loss, terms, masks, centres = _keras_step(model, views)
    _check_masks(masks)
    module = _dinov2_reference(model)
    # The collate's upperbound is a bound, not the count: padding rows must not change anything.
    out = _run_dinov2(module, views, masks, model.teacher_temperature, upperbound=int(masks.sum()) + 5)
    dino = float(out["dino_local_crops_loss"] + out["dino_global_crops_loss"])
    assert dino == pytest.approx(terms["cls"], rel=1e-5)
    assert float(out["ibot_loss"]) == pytest.approx(terms["patch"], rel=1e-5)
    assert float(out["koleo_loss"]) == pytest.approx(model.koleo_weight * terms["koleo"], rel=1e-5)
    assert float(out["loss"]) == pytest.approx(loss, rel=1e-5)
    if model.centering == "centering":  # the running centres after the step (the patch one: masked patches)
        np.testing.assert_allclose(module.dino_center.numpy().ravel(), centres[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(module.ibot_center.numpy().ravel(), centres[1], rtol=1e-5, atol=1e-6)


def _sinkhorn(scores, eps, iterations=3):
    """SwAV's Sinkhorn-Knopp (Caron et al. 2020, eq. 3): Q (K x B) = exp(S^T / eps) scaled alternately
    to rows summing to 1 / K and columns to 1 / B, then columns to 1: a (B, K) assignment."""
    q = np.exp(np.asarray(scores, np.float64).T / eps)
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= k * q.sum(axis=1, keepdims=True)
        q /= b * q.sum(axis=0, keepdims=True)
    return (q * b).T


def _koleo(x):
    """KoLeo (Sablayrolles et al. 2019): -mean log of each unit vector's distance to its nearest other."""
    x = np.asarray(x, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1) + np.diag(np.full(len(x), np.inf))
    return -np.mean(np.log(d.min(axis=1)))


def test_reference_dinov2_loss_is_the_papers():
    torch.manual_seed(1)
    vit = ref.ViT(**SIZES, pixel_norm="imagenet", layerscale=1e-5)
    module = ref.DINOv2(vit, out_dim=24, hidden_dim=16, bottleneck_dim=8)
    for p in module.parameters():  # move LayerScale and the heads off their init
        p.data.add_(0.1 * torch.randn_like(p))
    masks = np.random.default_rng(7).uniform(size=(2 * BATCH, 16)) < 0.4
    masks[3] = False
    out = _run_dinov2(module, _views(8), masks, teacher_temp=0.06, upperbound=int(masks.sum()) + 3)
    f64 = lambda t: np.asarray(t, np.float64)
    # DINO on [CLS]: Sinkhorn codes of the teacher over the global batch; every (teacher global crop,
    # other student crop) pair, averaged.
    codes = _sinkhorn(f64(out["teacher_cls"]), 0.06).reshape(2, BATCH, 24)[::-1]  # the official's crop swap undone
    student = list(f64(out["global_after"]).reshape(2, BATCH, 24)) + list(
        f64(out["local_after"]).reshape(-1, BATCH, 24)
    )
    pairs = [_cross_entropy(codes[i], s / 0.1).mean() for i in range(2) for v, s in enumerate(student) if v != i]
    # iBOT on the masked patches: Sinkhorn over those patches only; per image the mean over its masked patches.
    patch_codes = _sinkhorn(f64(out["teacher_patch"]), 0.06)
    ce = _cross_entropy(patch_codes, f64(out["patch_after"]) / 0.1)
    image = np.nonzero(masks.ravel())[0] // 16
    per_image = np.array([ce[image == i].mean() if (image == i).any() else 0.0 for i in range(2 * BATCH)])
    koleo = sum(_koleo(c) for c in f64(out["global_cls"]).reshape(2, BATCH, -1))
    dino = float(out["dino_local_crops_loss"] + out["dino_global_crops_loss"])
    assert [dino, float(out["ibot_loss"]), float(out["koleo_loss"])] == pytest.approx(
        [np.mean(pairs), per_image.mean(), 0.1 * koleo], rel=1e-5
    )


# ------------------------------------------------------------------ the differences found


def test_local_crop_positions_offset():
    """1. The official codes interpolate local crops' positions with a 0.1 offset, keras_ssl to the size."""
    model = _perturbed(_model(keras_ssl.IBOT), seed=9)
    views = _views(10)
    loss, _, masks, _ = _keras_step(model, views)
    same = _run_ibot(_ibot_reference(model), views, masks)
    official = _run_ibot(_ibot_reference(model, offset=0.1), views, masks)
    assert float(same["loss"]) == pytest.approx(loss, rel=1e-5)
    vit = ref.ViT.like(model.encoder)
    ref.from_keras(vit, model.encoder)
    keras_positions = _numpy(model.encoder.pos_embed.patch_positions(2, 2))
    np.testing.assert_allclose(ref.patch_positions(vit, 2, 2, offset=0).detach().numpy(), keras_positions, atol=1e-6)
    assert float(official["patch"]) == pytest.approx(float(same["patch"]), rel=1e-6)  # global crops: no resize
    assert float((official["student_local_cls"] - same["student_local_cls"]).abs().max()) > 1e-4
    # ViT-S/16's 14 x 14 table resized to a 96-pixel crop's 6 x 6: a random table, and a smooth one.
    for positions, change in (("learned", 0.289), ("sincos", 0.053)):
        big = ref.ViT(image_size=224, patch_size=16, dim=32, depth=1, heads=2, positions=positions)
        if positions == "learned":
            table = np.random.default_rng(0).normal(0.0, 0.02, (1, 197, 32)).astype("float32")
            big.pos_embed.data.copy_(torch.from_numpy(table))
        with torch.no_grad():
            size, offset = (ref.patch_positions(big, 6, 6, offset=o) for o in (0, 0.1))
        assert float((offset - size).norm() / size.norm()) == pytest.approx(change, abs=2e-3)


def test_teacher_temperature_warmup_is_the_official_linspace():
    """2. np.linspace(start, end, W) reaches `end` at W - 1; so does keras_ssl's warm-up of W steps (fixed 2026-12-08)."""
    for warmup in (1, 2, 10):
        model = _model(keras_ssl.IBOT, warmup_teacher_steps=warmup, teacher_temperature=0.07)
        got = []
        for step in (0, 1, 5, 9, 10):
            model.step.assign(step)
            got.append(float(_numpy(model.current_teacher_temperature())))
        assert got == pytest.approx([ref.official_warmup(0.04, 0.07, warmup, s) for s in (0, 1, 5, 9, 10)])
    assert ref.official_warmup(0.04, 0.07, 10, 5) == pytest.approx(0.04 + 0.03 * 5 / 9)


def test_ibot_separate_head_structure():
    """3. iBOT's `--shared_head false` shares the MLP (a second last layer only); keras_ssl's a whole head."""
    model = _model(keras_ssl.IBOT, shared_head=False, patch_output_dim=20)
    official = ref.iBOTHead(32, 24, 20, shared_head=False, hidden_dim=16, bottleneck_dim=8)
    count = lambda layer: sum(int(np.prod(w.shape)) for w in layer.weights)
    mlp = sum(p.numel() for p in official.mlp.parameters())
    assert sum(p.numel() for p in official.parameters()) == mlp + 8 * 24 + 24 + 8 * 20 + 20
    assert count(model.head) + count(model.patch_head) == 2 * mlp + 8 * 24 + 24 + 8 * 20 + 20  # one MLP more
    with pytest.raises(ValueError, match="shared_head=False"):
        ref.ibot_from_keras(ref.IBOT(ref.ViT.like(model.encoder), out_dim=24, hidden_dim=16, bottleneck_dim=8), model)


def test_dinov2_without_local_crops():
    """4. The official's `max(n_local_crops * 2, 1)` scales the class loss by 2 / 3 without local crops."""
    model = _perturbed(
        _model(keras_ssl.DINOv2, views=keras_ssl.views.ibot_views(16, local_size=8, num_local=0)), seed=11
    )
    views = _views(12, local=0)
    _, terms, masks, _ = _keras_step(model, views)
    out = _run_dinov2(_dinov2_reference(model), views, masks, model.teacher_temperature)
    assert float(out["ibot_loss"]) == pytest.approx(terms["patch"], rel=1e-5)
    assert float(out["dino_global_crops_loss"]) == pytest.approx(2 / 3 * terms["cls"], rel=1e-5)


def test_dinov2_last_layer_scale():
    """5. DINOv2's head trains its weight-norm scale (dino_head.py freezes nothing); so does keras_ssl's (fixed 2026-12-08)."""
    model = _model(keras_ssl.DINOv2)
    assert not model.norm_last_layer and model.head.last_g.trainable
    assert ref.DINOHead(32, 24, hidden_dim=16, bottleneck_dim=8).last_layer.weight_g.requires_grad
    assert not _model(keras_ssl.IBOT).head.last_g.trainable  # iBOT's main_ibot.py --norm_last_layer true
