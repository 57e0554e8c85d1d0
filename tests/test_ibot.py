"""iBOT and DINOv2: the whole loss against the official code's (NumPy) on every patch, the heads on the
masked patches only against the heads on every patch (loss and gradients), centres, masks."""

import keras
import numpy as np
import pytest
from conftest import grads, random_images
from keras import ops
from numpy_refs_distillation import _log_softmax
from numpy_refs_ibot import dinov2_loss, ibot_loss, koleo, sinkhorn_knopp_teacher

import keras_ssl
from keras_ssl.backbones import vit
from keras_ssl.layers.distillation_heads import take_rows
from keras_ssl.methods.dinov2 import DINOv2
from keras_ssl.methods.ibot import IBOT
from keras_ssl.views import dinov2_views, ibot_views

K = 24


def tiny_vit(**kw):
    return vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, **kw)


def make(cls=IBOT, encoder=None, **kw):
    views = (dinov2_views if cls is DINOv2 else ibot_views)(16, local_size=8, num_local=2, seed=10)
    options = dict(views=views, output_dim=K, hidden_dim=16, bottleneck_dim=8, seed=1)
    return cls(encoder or tiny_vit(), **{**options, **kw})


def to_np(out):
    return {
        k: [ops.convert_to_numpy(t) for t in v] if isinstance(v, (list, tuple)) else ops.convert_to_numpy(v)
        for k, v in out.items()
    }


def test_references_on_hand_cases():
    # Uniform outputs: every cross-entropy is ln K; iBOT's patch term counts masked images only.
    z = np.zeros((2, 3, 4, K))
    masks = np.zeros((2, 3, 4))
    masks[0, 0, :2] = 1
    total, loss1, loss2, _, _ = ibot_loss(
        np.zeros((4, 3, K)), z, np.zeros((2, 3, K)), z, masks, 0.0, 0.0, temps=(0.1, 0.04, 0.07)
    )
    np.testing.assert_allclose([loss1, loss2], [np.log(K), np.log(K) / 3 / 2])
    # Sinkhorn-Knopp of equal scores is uniform; KoLeo of the 4 axis directions is -ln sqrt(2).
    np.testing.assert_allclose(sinkhorn_knopp_teacher(np.zeros((6, 3)), 0.05), np.full((6, 3), 1 / 3))
    np.testing.assert_allclose(koleo(np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1]])), -np.log(np.sqrt(2)), rtol=1e-7)


def full_patch_outputs(model, views, masks):
    """The patch heads on EVERY patch token of the global crops, `(2, B, N, K)` each: the computation
    before the gather, and what the official iBOT runs."""
    images = ops.concatenate(views[:2], axis=0)
    _, student = model._tokens(model.encoder, images, True, masks)
    _, teacher = model._tokens(model.teacher_encoder, images, True)
    separate = not model.shared_head
    s = model.patch_head(student) if separate else model.head(student)
    t = model.teacher_patch_head(teacher) if separate else model.teacher_head(teacher)
    return [ops.convert_to_numpy(x).reshape(2, -1, *x.shape[1:]) for x in (s, t)]


def forward_and_loss(model):
    """One training forward of `model` on 8 images: NumPy outputs, the loss and terms, and the views."""
    views = model.views(random_images(8), training=True)
    outputs = model.ssl_forward(views, training=True)
    loss, terms = model.compute_ssl_loss(outputs)
    model.update_state(outputs)
    values = to_np({"loss": loss, **terms})
    return to_np(outputs), float(values.pop("loss")), {k: float(v) for k, v in values.items()}, views


@pytest.mark.parametrize("shared_head", [True, False])
def test_ibot_loss_and_centres_equal_the_official_loss(shared_head):
    model = make(shared_head=shared_head, warmup_teacher_steps=10, patch_output_dim=20)
    model.build()
    model.step.assign(4)
    rng = np.random.default_rng(0)
    model.center.assign(0.1 * rng.normal(size=K).astype("float32"))
    model.patch_center.assign(0.1 * rng.normal(size=model.patch_output_dim).astype("float32"))
    center, center2 = np.array(model.center), np.array(model.patch_center)
    o, loss, terms, views = forward_and_loss(model)
    masks = o["masks"].reshape(2, 8, 16)
    # The student's patch head ran on the sampler's bound of rows (any crop may be masked: half the patches).
    assert o["student_patches"].shape == (model.masking.max_masked(16), K if shared_head else 20)
    assert model.masking.max_masked(16) == 128
    student_patches, teacher_patches = full_patch_outputs(model, views, o["masks"])
    # The patch temperature warms up as main_ibot.py's np.linspace(0.04, 0.07, W); the class one is flat.
    temps = (0.1, 0.04, np.linspace(0.04, 0.07, 10)[4])
    total, loss1, loss2, new_center, new_center2 = ibot_loss(
        o["student"], student_patches, o["teacher"], teacher_patches, masks, center, center2, temps=temps
    )
    assert np.sum(masks) > 0 and loss2 > 0
    np.testing.assert_allclose([terms["cls"], terms["patch"], loss], [loss1, loss2, total], rtol=1e-5)
    np.testing.assert_allclose(np.array(model.center), new_center, atol=1e-6)
    np.testing.assert_allclose(np.array(model.patch_center), new_center2, atol=1e-6)
    pairs = [p for p, _ in model.momentum_pairs]
    assert pairs == (["encoder", "head"] if shared_head else ["encoder", "head", "patch_head"])


@pytest.mark.parametrize("num_registers", [0, 2])
def test_dinov2_loss_equals_the_official_forward_backward(num_registers):
    model = make(DINOv2, tiny_vit(num_registers=num_registers, layerscale=1e-5))
    model.build()
    views = model.views(random_images(8), training=True)
    outputs = model.ssl_forward(views, training=True)
    # At init the class tokens nearly coincide and float32 cannot rank their neighbours (nor can
    # DINOv2's): KoLeo is checked on spread features in their place.
    rng = np.random.default_rng(3)
    outputs["cls_features"] = [rng.normal(size=(8, 16)).astype("float32") for _ in range(2)]
    loss, terms = model.compute_ssl_loss(outputs)
    o = to_np(outputs)
    masks = o["masks"].reshape(2, 8, 16)
    # Both patch heads ran on the collate's upperbound of rows, not on the 256 patches.
    rows = model.masking.max_masked(16)
    assert o["student_patches"].shape[0] == o["teacher_patches"].shape[0] == rows < 64
    student_patches, teacher_patches = full_patch_outputs(model, views, o["masks"])
    total, dino, ibot, koleo_sum = dinov2_loss(
        o["student"][:2],
        o["student"][2:],
        student_patches,
        np.stack(o["teacher"]),
        teacher_patches,
        masks,
        o["cls_features"],
        student_temp=0.1,
        teacher_temp=0.07,
    )
    # DINOv2's collate masks exactly half of the 2B global crops.
    assert np.sum(masks.sum(-1) > 0) == 8
    np.testing.assert_allclose(ops.convert_to_numpy(terms["cls"]), dino, rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(terms["patch"]), ibot, rtol=1e-4)
    np.testing.assert_allclose(ops.convert_to_numpy(terms["koleo"]), koleo_sum, rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(loss), total, rtol=1e-4)


def test_dinov2_running_centring_follows_the_masked_patches():
    model = make(DINOv2, centering="centering", center_momentum=0.5, patch_center_momentum=0.5)
    model.build()
    out, _, _, views = forward_and_loss(model)
    masks = out["masks"].reshape(2, 8, 16, 1)
    teacher = full_patch_outputs(model, views, out["masks"])[1]
    np.testing.assert_allclose(
        np.array(model.patch_center), 0.5 * (teacher * masks).sum((0, 1, 2)) / masks.sum(), atol=1e-6
    )
    np.testing.assert_allclose(np.array(model.center), 0.5 * np.concatenate(out["teacher"]).mean(0), atol=1e-6)


def test_gathered_patch_heads_give_the_full_heads_loss_and_gradients():
    # One compiled SGD(1) step from the same weights and masks: the weights move by -gradient. DINOv2:
    # both heads gathered (iBOT's student side: the official loss above, the loss's gradient in
    # test_distillation); one case, as each compiles two steps.
    steps = []
    for all_patches in (True, False):
        model = make(DINOv2, freeze_last_layer_steps=0)
        model._all_patches = all_patches
        model.compile(optimizer=keras.optimizers.SGD(1.0))
        model.build()
        if steps:
            model.set_weights(steps[0][2])
        before = model.get_weights()
        logs = model.train_on_batch(random_images(8), return_dict=True)
        steps.append((logs, [b - a for b, a in zip(before, model.get_weights())], before))
    (full, full_deltas, _), (gathered, gathered_deltas, _) = steps
    for key in ("loss", "cls", "patch"):
        np.testing.assert_allclose(gathered[key], full[key], rtol=1e-5)
    scale = max(np.abs(d).max() for d in full_deltas)
    assert scale > 0
    for got, want in zip(gathered_deltas, full_deltas):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


def official_patch_term(student, teacher, masks, student_temp, teacher_temp):
    """DINOv2's patch term and its gradient w.r.t. `student`, float64, from every patch's head outputs
    `(I, N, K)` and masks `(I, N)` of the I global crops: the masked rows in raster order (collate's
    mask_indices_list), Sinkhorn-Knopp codes of the teacher's over them (B = n_masked_patches),
    `iBOTPatchLoss.forward_masked` with collate's masks_weight, times loss_scales 2 and 1 / n_global_crops 2.
    The gradient is the analytic one: `w (softmax(s / T) * sum(t) - t) / (T * I)` per masked row."""
    masks = masks.astype(bool)
    codes = sinkhorn_knopp_teacher(teacher[masks], teacher_temp, num_samples=int(masks.sum()))
    weights = np.broadcast_to(1.0 / np.maximum(masks.sum(-1, keepdims=True), 1.0), masks.shape)[masks]
    log_p = _log_softmax(np.asarray(student, np.float64)[masks] / student_temp)
    loss = -np.sum(weights * np.sum(codes * log_p, axis=-1)) / len(masks) * 2 * (1 / 2)
    gradient = np.zeros(student.shape)
    rows = np.exp(log_p) * codes.sum(-1, keepdims=True) - codes
    gradient[masks] = weights[:, None] * rows / (student_temp * len(masks))
    return loss, gradient


def test_dinov2_gathered_patch_loss_and_gradient_equal_the_official_masked_loss():
    model = make(DINOv2)
    masks = ops.convert_to_numpy(model.masking(np.zeros((16, 16, 16, 3), "float32")))  # 2 crops of 8 images
    rows, weights = model._patch_rows(masks)  # the masked patches, padded to the static bound
    assert 0 < masks.sum() < len(ops.convert_to_numpy(rows)) and masks.sum(-1).min() == 0
    rng = np.random.default_rng(7)
    student, teacher = (rng.normal(size=(16, 16, K)).astype("float32") for _ in range(2))

    def patch_loss(s, t):
        outputs = {"student_patches": take_rows(s, rows), "teacher_patches": take_rows(t, rows)}
        return model.patch_loss({**outputs, "patch_weights": weights, "masks": masks})

    expected, expected_gradient = official_patch_term(student, teacher, masks, 0.1, 0.07)
    np.testing.assert_allclose(float(ops.convert_to_numpy(patch_loss(student, teacher))), expected, rtol=2e-5)
    gradient, teacher_gradient = grads(patch_loss, student, teacher)
    np.testing.assert_allclose(gradient, expected_gradient, atol=2e-5 * np.abs(expected_gradient).max())
    assert np.abs(teacher_gradient).max() == 0
    # The analytic reference gradient itself, against central differences of the reference loss.
    for index in [tuple(i) for i in np.argwhere(masks)[:: max(1, int(masks.sum()) // 4)]]:
        step = np.zeros(student.shape)
        step[index + (3,)] = 1e-6
        up, down = (official_patch_term(student + d, teacher, masks, 0.1, 0.07)[0] for d in (step, -step))
        assert abs((up - down) / 2e-6 - expected_gradient[index + (3,)]) < 1e-6


def test_student_sees_masked_crops_and_the_teacher_sees_them_whole():
    model = make()
    model.build()
    views = model.views(random_images(8), training=True)
    state = np.array(model.masking.seed_generator.state)
    first = to_np(model.ssl_forward(views, training=False))
    masks = first["masks"].reshape(16, 4, 4)
    assert 0 < masks.sum() < masks.size
    # Scribble over every masked patch of the global crops: the student cannot tell, the teacher can.
    pixels = np.repeat(np.repeat(masks, 4, axis=1), 4, axis=2)[..., None]
    scribbled = np.concatenate([ops.convert_to_numpy(v) for v in views[:2]]) * (1 - pixels) + pixels * 0.123
    views = [scribbled[:8], scribbled[8:], *views[2:]]
    model.masking.seed_generator.state.assign(state)
    second = to_np(model.ssl_forward(views, training=False))
    np.testing.assert_array_equal(second["masks"], first["masks"])
    np.testing.assert_allclose(np.concatenate(second["student"][:2]), np.concatenate(first["student"][:2]), atol=1e-5)
    np.testing.assert_allclose(second["student_patches"], first["student_patches"], atol=1e-5)
    assert np.abs(np.concatenate(second["teacher"]) - np.concatenate(first["teacher"])).max() > 1e-4


def test_bad_options_are_rejected():
    with pytest.raises(TypeError, match="IBOT works on patch tokens.*ViT"):
        IBOT(keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8))
    with pytest.raises(ValueError, match="patch_center_momentum"):
        make(patch_center_momentum=1.0)
    with pytest.raises(ValueError, match="centering"):
        make(DINOv2, centering="mean")
    with pytest.raises(ValueError, match="koleo_weight"):
        make(DINOv2, koleo_weight=-1)
