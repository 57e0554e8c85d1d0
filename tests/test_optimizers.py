"""LARS, SGD and Adam against NumPy and torch.optim, the schedules (warm-up cosine, the papers' cosine weight
decay) and the learning-rate scaling rule."""

import math

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder
from numpy_refs_schedules import (
    dino_cosine_scheduler,
    ijepa_cosine_wd_schedule,
    official_cosine_scheduler,
    official_warmup_cosine_stepped,
)

import keras_ssl
from keras_ssl.optimizers import LARS, WarmupCosine, scale_learning_rate
from keras_ssl.schedules import CosineWeightDecay


def lars_reference(w, grads, lr, momentum, wd, eta, adapt):
    """NumPy LARS as in the SimCLR/BYOL reference code; `wd` one number or one per step."""
    v = np.zeros_like(w)
    for step, g in enumerate(grads):
        if adapt:
            g = g + (wd[step] if np.ndim(wd) else wd) * w
            wn, gn = np.linalg.norm(w), np.linalg.norm(g)
            g = g * (eta * wn / gn if wn > 0 and gn > 0 else 1.0)
        v = momentum * v + g
        w = w - lr * v
    return w


def test_lars_matches_numpy_and_excludes_bias():
    rng = np.random.default_rng(0)
    kernel0, bias0 = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(3,)).astype("float32")
    kernel = keras.Variable(kernel0)
    bias = keras.Variable(bias0)
    grads = [(rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(3,)).astype("float32")) for _ in range(3)]
    opt = LARS(0.5, momentum=0.9, weight_decay=1e-2, trust_coefficient=0.01)
    for gk, gb in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(gk), kernel), (keras.ops.convert_to_tensor(gb), bias)])
    want_k = lars_reference(kernel0, [g for g, _ in grads], 0.5, 0.9, 1e-2, 0.01, adapt=True)
    want_b = lars_reference(bias0, [g for _, g in grads], 0.5, 0.9, 1e-2, 0.01, adapt=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), want_k, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bias), want_b, rtol=1e-5, atol=1e-6)


def test_lars_trains_an_ssl_model_and_round_trips():
    model = keras_ssl.SimCLR(small_encoder(), hidden_dim=16, projection_dim=8, seed=0)
    schedule = WarmupCosine(0.5, total_steps=4, warmup_steps=1)
    model.compile(optimizer=LARS(schedule, weight_decay=1e-6))
    history = model.fit(random_images(16), batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    clone = LARS.from_config(model.optimizer.get_config())
    assert clone.trust_coefficient == 1e-3 and clone.lars_weight_decay == 1e-6


def test_warmup_cosine_values():
    s = WarmupCosine(1.0, total_steps=110, warmup_steps=10, final=0.1)
    values = [float(keras.ops.convert_to_numpy(s(t))) for t in (0, 5, 10, 60, 110, 200)]
    expected = [0.0, 0.5, 1.0, 0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)), 0.1, 0.1]
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert WarmupCosine.from_config(s.get_config()).warmup_steps == 10
    assert WarmupCosine is keras_ssl.schedules.WarmupCosine  # moved to schedules, still importable from optimizers
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(1.0, total_steps=5, warmup_steps=10)


@pytest.mark.parametrize("warmup", [0, 1, 2, 7])
def test_warmup_cosine_equals_the_official_schedulers(warmup):
    steps = np.arange(40)
    ijepa = WarmupCosine(1e-3, 40, warmup, final=1e-6, initial=2e-4, step_offset=1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ijepa(steps)),
        official_warmup_cosine_stepped(2e-4, 1e-3, 1e-6, warmup, 40, 40),
        rtol=1e-5,
        atol=1e-9,
    )
    dino = WarmupCosine(0.5, 40, warmup, final=1e-3, linspace_warmup=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(dino(steps)), official_cosine_scheduler(0.5, 1e-3, 40, warmup), rtol=1e-5, atol=1e-8
    )
    clone = WarmupCosine.from_config(ijepa.get_config())
    assert (clone.initial, clone.step_offset, clone.linspace_warmup) == (2e-4, 1, False)
    with pytest.raises(ValueError, match="step_offset"):
        WarmupCosine(1.0, 10, 2, step_offset=-1)


def test_scaling_rule_and_bad_options():
    assert scale_learning_rate(0.3, 1024) == pytest.approx(1.2)
    assert scale_learning_rate(0.3, 1024, rule="sqrt") == pytest.approx(0.6)
    with pytest.raises(ValueError, match="rule"):
        scale_learning_rate(0.3, 512, rule="cube")
    with pytest.raises(ValueError, match="momentum"):
        LARS(0.1, momentum=1.5)


# ------------------------------------------------- PyTorch's semantics: SGD and Adam against torch.optim
def _small_model_weights(seed=0):
    """A Dense + BatchNorm model's trainable variables, all set to random values, and fixed gradients."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    grads = [[rng.normal(size=v.shape).astype("float32") for v in model.trainable_variables] for _ in range(4)]
    return model.trainable_variables, grads


def _run_torch(torch, make, weights, grads, lrs, decay_all):
    """The same steps with a torch.optim optimizer; its param groups decay the kernel only (by name, as DINO's)."""
    params = [torch.tensor(np.asarray(keras.ops.convert_to_numpy(v))) for v in weights]
    decayed = [p for p, v in zip(params, weights) if decay_all or v.name == "kernel"]
    rest = [p for p, v in zip(params, weights) if not (decay_all or v.name == "kernel")]
    groups = [{"params": decayed}] + ([{"params": rest, "weight_decay": 0.0}] if rest else [])
    optimizer = make(groups)
    for step, step_grads in enumerate(grads):
        for p, g in zip(params, step_grads):
            p.grad = torch.tensor(g)
        for group in optimizer.param_groups:
            group["lr"] = lrs[step]
        optimizer.step()
    return [p.detach().numpy() for p in params]


def _run_keras(optimizer, weights, grads):
    for step_grads in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), v) for g, v in zip(step_grads, weights)])
    return [keras.ops.convert_to_numpy(v) for v in weights]


# A learning rate that changes at every step: PyTorch keeps it out of the momentum, Keras's SGD does not.
LRS = [0.5 * 0.7**t for t in range(4)]


def _schedule():
    return keras.optimizers.schedules.ExponentialDecay(0.5, decay_steps=1, decay_rate=0.7)


def test_sgd_equals_torch_sgd():
    torch = pytest.importorskip("torch")
    wd = 0.05
    for momentum, nesterov, decay_all in (
        (0.9, False, False),
        (0.9, True, False),
        (0.0, False, True),
        (0.9, False, True),
    ):
        weights, grads = _small_model_weights()
        want = _run_torch(
            torch,
            lambda g: torch.optim.SGD(g, lr=1.0, momentum=momentum, weight_decay=wd, nesterov=nesterov),
            weights,
            grads,
            LRS,
            decay_all,
        )
        opt = keras_ssl.optimizers.SGD(
            _schedule(), momentum=momentum, weight_decay=wd, nesterov=nesterov, exclude_bias_and_norm=not decay_all
        )
        for v, got, expected in zip(weights, _run_keras(opt, weights, grads), want):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"{v.path} {momentum} {nesterov}")


def test_adam_equals_torch_adam_and_adamw():
    torch = pytest.importorskip("torch")
    wd = 0.1
    for decoupled, torch_class in ((False, torch.optim.Adam), (True, torch.optim.AdamW)):
        weights, grads = _small_model_weights(1)
        want = _run_torch(
            torch, lambda g: torch_class(g, lr=1.0, betas=(0.9, 0.95), weight_decay=wd), weights, grads, LRS, False
        )
        opt = keras_ssl.optimizers.Adam(_schedule(), beta_2=0.95, weight_decay=wd, decoupled_weight_decay=decoupled)
        for v, got, expected in zip(weights, _run_keras(opt, weights, grads), want):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"{v.path} {torch_class}")


def test_keras_sgd_is_not_the_papers_sgd():
    """Keras's SGD(weight_decay=) decays decoupled; with no decay and a constant rate the two agree."""
    torch = pytest.importorskip("torch")
    for wd, equal in ((0.0, True), (0.05, False)):
        weights, grads = _small_model_weights()
        want = _run_torch(
            torch, lambda g: torch.optim.SGD(g, lr=1.0, momentum=0.9, weight_decay=wd), weights, grads, [0.3] * 4, True
        )
        got = _run_keras(keras.optimizers.SGD(0.3, momentum=0.9, weight_decay=wd or None), weights, grads)
        gap = max(float(np.max(np.abs(a - b))) for a, b in zip(got, want))
        assert (gap < 1e-5) == equal, (wd, gap)


def _twins(torch, seed=2):
    """A Dense + LayerNorm Keras model, its PyTorch twin with the same weights, the torch param groups
    (the kernel decays; bias and norm do not, as DINO's groups) and one batch."""
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 3)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.LayerNormalization(epsilon=1e-5)])
    for v in model.trainable_variables:
        v.assign(rng.normal(size=v.shape).astype("float32"))
    kernel, bias, gamma, beta = [torch.tensor(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]
    linear, norm = torch.nn.Linear(4, 3), torch.nn.LayerNorm(3, eps=1e-5)
    with torch.no_grad():
        for target, value in ((linear.weight, kernel.T), (linear.bias, bias), (norm.weight, gamma), (norm.bias, beta)):
            target.copy_(value)
    groups = [{"params": [linear.weight]}, {"params": [linear.bias, norm.weight, norm.bias], "weight_decay": 0.0}]
    return model, (linear, norm), groups, x, y


def _fit_both(torch, model, modules, reference, ours, x, y, steps, decays=None):
    """`steps` full-batch steps in Keras's compiled `fit` and in PyTorch; with `decays`, the official loop's
    `param_group["weight_decay"] = wd_schedule[it]` on the decayed group before each step."""
    linear, norm = modules
    for it in range(steps):
        if decays is not None:
            reference.param_groups[0]["weight_decay"] = float(decays[it])
        reference.zero_grad()
        torch.nn.functional.mse_loss(norm(linear(torch.tensor(x))), torch.tensor(y)).backward()
        reference.step()
    model.compile(optimizer=ours, loss="mse")
    model.fit(x, y, batch_size=8, epochs=steps, shuffle=False, verbose=0)  # one traced step, run `steps` times
    got = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    return got, [p.detach().numpy() for p in (linear.weight.T, linear.bias, norm.weight, norm.bias)]


def test_compiled_fit_step_equals_torch():
    """Inside each backend's compiled train step: Dense + LayerNorm, MSE, 3 full-batch steps, vs PyTorch."""
    torch = pytest.importorskip("torch")
    for which in ("sgd", "adamw"):
        model, modules, groups, x, y = _twins(torch)
        if which == "sgd":
            reference = torch.optim.SGD(groups, lr=0.2, momentum=0.9, weight_decay=0.1, nesterov=True)
            ours = keras_ssl.optimizers.SGD(0.2, momentum=0.9, weight_decay=0.1, nesterov=True)
        else:
            reference = torch.optim.AdamW(groups, lr=0.05, weight_decay=0.3)
            ours = keras_ssl.optimizers.Adam(0.05, weight_decay=0.3, decoupled_weight_decay=True)
        got, want = _fit_both(torch, model, modules, reference, ours, x, y, 3)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=which)


# ------------------------------------------------- the ViT methods' weight-decay schedule (0.04 -> 0.4)
def test_cosine_weight_decay_equals_the_official_schedules():
    steps = np.arange(24)
    dino = keras.ops.convert_to_numpy(CosineWeightDecay(0.04, 0.4, total_steps=21)(steps))
    np.testing.assert_allclose(dino[:21], dino_cosine_scheduler(0.04, 0.4, epochs=3, niter_per_ep=7), atol=1e-6)
    np.testing.assert_allclose(dino[21:], 0.4, atol=1e-6)  # DINOv2's CosineScheduler: final_value after the run
    ijepa = CosineWeightDecay(0.04, 0.4, total_steps=21, step_offset=1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ijepa(steps[:21])), ijepa_cosine_wd_schedule(0.04, 0.4, 21, 21), atol=1e-6
    )
    falling = keras.ops.convert_to_numpy(CosineWeightDecay(0.3, 0.01, total_steps=5)(steps[:5]))
    np.testing.assert_allclose(falling, dino_cosine_scheduler(0.3, 0.01, 1, 5), atol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(ijepa))
    assert type(clone) is CosineWeightDecay and clone.get_config() == ijepa.get_config()
    for kwargs, problem in (
        (dict(start=-0.1, end=0.4, total_steps=10), ">= 0"),
        (dict(start=0.04, end=0.4, total_steps=0), "total_steps"),
        (dict(start=0.04, end=0.4, total_steps=10, step_offset=-1), "step_offset"),
    ):
        with pytest.raises(ValueError, match=problem):
            CosineWeightDecay(**kwargs)


def test_scheduled_weight_decay_is_read_at_every_compiled_step_as_torch_sets_it():
    """4 compiled steps with the decay rising steeply, vs torch.optim SGD / AdamW whose group decay is set to the
    official `cosine_scheduler`'s value before each step: a decay read once (at trace time) fails here."""
    torch = pytest.importorskip("torch")
    steps = 4
    decays = dino_cosine_scheduler(0.05, 0.5, epochs=1, niter_per_ep=steps)
    for which in ("sgd", "adamw"):
        model, modules, groups, x, y = _twins(torch, seed=3)
        schedule = CosineWeightDecay(0.05, 0.5, total_steps=steps)
        if which == "sgd":
            reference = torch.optim.SGD(groups, lr=0.2, momentum=0.9)
            ours = keras_ssl.optimizers.SGD(0.2, momentum=0.9, weight_decay=schedule)
        else:
            reference = torch.optim.AdamW(groups, lr=0.05)
            ours = keras_ssl.optimizers.Adam(0.05, weight_decay=schedule, decoupled_weight_decay=True)
        got, want = _fit_both(torch, model, modules, reference, ours, x, y, steps, decays)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=which)


def test_lars_and_coupled_adam_take_the_schedule_at_each_step():
    """LARS (NumPy reference, per-step decay) and Adam's L2 (torch.optim.Adam, group decay set per step)."""
    torch = pytest.importorskip("torch")
    decays = dino_cosine_scheduler(0.02, 0.2, epochs=1, niter_per_ep=3)
    rng = np.random.default_rng(4)
    kernel0 = rng.normal(size=(4, 3)).astype("float32")
    grads = [rng.normal(size=(4, 3)).astype("float32") for _ in range(3)]
    kernel = keras.Variable(kernel0)
    opt = LARS(0.5, momentum=0.9, weight_decay=CosineWeightDecay(0.02, 0.2, 3), trust_coefficient=0.01)
    for g in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(g), kernel)])
    want = lars_reference(kernel0, grads, 0.5, 0.9, decays, 0.01, adapt=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), want, rtol=1e-5, atol=1e-6)
    weights, step_grads = _small_model_weights(5)
    params = [torch.tensor(np.asarray(keras.ops.convert_to_numpy(v))) for v in weights]
    reference = torch.optim.Adam([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}], lr=0.1)
    for it, grads_now in enumerate(step_grads[:3]):
        reference.param_groups[0]["weight_decay"] = float(decays[it])
        for p, g in zip(params, grads_now):
            p.grad = torch.tensor(g)
        reference.step()
    ours = keras_ssl.optimizers.Adam(0.1, weight_decay=CosineWeightDecay(0.02, 0.2, 3))
    for v, got, expected in zip(weights, _run_keras(ours, weights, step_grads[:3]), params):
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5, err_msg=v.path)


def test_sgd_and_adam_round_trip_and_refuse_bad_options():
    for opt in (
        keras_ssl.optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-4, nesterov=True, exclude_bias_and_norm=False),
        keras_ssl.optimizers.Adam(1e-3, beta_2=0.95, weight_decay=0.05, decoupled_weight_decay=True),
        keras_ssl.optimizers.Adam(1e-3, weight_decay=CosineWeightDecay(0.04, 0.4, 100), decoupled_weight_decay=True),
        keras_ssl.optimizers.SGD(0.1, momentum=0.9, weight_decay=CosineWeightDecay(1e-4, 1e-3, 50, step_offset=1)),
        LARS(0.1, weight_decay=CosineWeightDecay(1e-6, 1e-5, 10)),
    ):
        clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
        assert type(clone) is type(opt) and clone.get_config() == opt.get_config()
        assert clone.weight_decay is None  # Keras's own decoupled decay stays off
    wd = keras.optimizers.deserialize(keras.optimizers.serialize(opt)).lars_weight_decay
    assert type(wd) is CosineWeightDecay and (wd.start, wd.end, wd.total_steps) == (1e-6, 1e-5, 10)
    with pytest.raises(ValueError, match="Nesterov"):
        keras_ssl.optimizers.SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        keras_ssl.optimizers.Adam(beta_1=1.0)
    for bad in (-1e-4, "0.04", None):
        with pytest.raises(ValueError, match="weight_decay"):
            keras_ssl.optimizers.SGD(0.1, weight_decay=bad)


def test_lars_clip_matches_larc_clipping():
    """solo-learn's `clip_lr`: each layer's rate is min(trust ratio, lr) (NumPy, from its lars.py)."""
    rng = np.random.default_rng(3)
    kernel0 = rng.normal(size=(4, 3)).astype("float32")
    grads = [rng.normal(size=(4, 3)).astype("float32") * s for s in (1.0, 1e-3, 1.0)]  # 1e-3: clipped to lr
    kernel = keras.Variable(kernel0)
    opt = LARS(0.5, momentum=0.9, weight_decay=1e-2, trust_coefficient=0.02, clip=True)
    for g in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(g), kernel)])
    w, v = kernel0.astype("float64"), np.zeros((4, 3))
    for g in grads:
        d = g + 1e-2 * w
        local = 0.02 * np.linalg.norm(w) / np.linalg.norm(d)
        v = 0.9 * v + d * min(local / 0.5, 1.0)
        w = w - 0.5 * v
    np.testing.assert_allclose(keras.ops.convert_to_numpy(kernel), w, rtol=1e-5, atol=1e-6)


# ------------------------------------------------- layer-wise rate decay: DINOv2's parameter groups
def _dinov2_lr_decay_rate(name, lr_decay_rate, num_layers):
    """dinov2/utils/param_groups.py `get_vit_lr_decay_rate` for a backbone's own names (force_is_backbone)."""
    layer_id = num_layers + 1
    if any(key in name for key in ("pos_embed", "patch_embed", "mask_token", "cls_token")):
        layer_id = 0
    elif "blocks." in name and "residual." not in name:
        layer_id = int(name[name.find("blocks.") :].split(".")[1]) + 1
    return lr_decay_rate ** (num_layers + 1 - layer_id)


def _dinov2_name(path):
    """The DINOv2 backbone's name for the parameter at our ViT's `path` (its `DinoVisionTransformer`)."""
    first, rest = path.split("/", 1) if "/" in path else (path, "")
    if first.startswith("block_"):
        return f"blocks.{first[len('block_') :]}.{rest.replace('/', '.')}"
    names = {"class_token": "cls_token", "class_position": "pos_embed", "positions": "pos_embed"}
    names |= {"registers": "register_tokens", "mask_token": "mask_token"}
    if first == "pos_embed":
        return names[rest]
    return {"patch_embed": "patch_embed.proj." + rest.split("/")[-1], "norm": "norm." + rest}.get(first, path)


def test_layer_decay_equals_dinov2_parameter_groups():
    # One SGD step of rate 1 on unit gradients moves each variable by its rate factor.
    encoder = keras_ssl.backbones.vit(image_size=8, patch_size=4, dim=8, depth=3, heads=2, num_registers=1)
    mask_token = keras.Variable(np.zeros(8, "float32"), name="mask_token")
    multipliers = encoder.layer_decay_multipliers(0.9, patch_embed_multiplier=0.2, embeddings=[mask_token])
    variables = encoder.trainable_variables + [mask_token]
    before = [keras.ops.convert_to_numpy(v).copy() for v in variables]
    optimizer = keras_ssl.optimizers.SGD(1.0, lr_multipliers=multipliers)
    optimizer.apply_gradients([(keras.ops.ones(v.shape), v) for v in variables])
    checked = set()
    for v, b in zip(variables, before):
        name = _dinov2_name(v.path)
        want = _dinov2_lr_decay_rate(name, 0.9, num_layers=3) * (0.2 if "patch_embed" in name else 1.0)
        np.testing.assert_allclose(b - keras.ops.convert_to_numpy(v), want, rtol=1e-5, err_msg=f"{v.path} ({name})")
        checked.add(round(want, 6))
    # embeddings 0.9^4, patch embedding 0.2 * 0.9^4, blocks 0.9^3..0.9, final norm and registers 1
    assert checked == {round(r, 6) for r in (0.9**4, 0.2 * 0.9**4, 0.9**3, 0.9**2, 0.9, 1.0)}
    with pytest.raises(ValueError, match="block_9"):
        keras_ssl.optimizers.SGD(1.0, lr_multipliers={"block_9": 0.5}).build(variables)


def test_adamw_with_rate_multipliers_equals_torch_param_groups():
    # DINOv2's apply_optim_scheduler: param_group["lr"] = lr * lr_multiplier, AdamW's decay scaled by it too.
    torch = pytest.importorskip("torch")
    weights, grads = _small_model_weights(3)
    factors = [0.3 if v.name == "kernel" else (0.0 if v.name == "gamma" else 1.0) for v in weights]
    params = [torch.tensor(np.asarray(keras.ops.convert_to_numpy(v))) for v in weights]
    groups = [
        {"params": [p], "lr_multiplier": f, "weight_decay": 0.1 if v.name == "kernel" else 0.0}
        for p, v, f in zip(params, weights, factors)
    ]
    reference = torch.optim.AdamW(groups, lr=1.0, betas=(0.9, 0.95))
    for step, step_grads in enumerate(grads):
        for p, g in zip(params, step_grads):
            p.grad = torch.tensor(g)
        for group in reference.param_groups:
            group["lr"] = LRS[step] * group["lr_multiplier"]
        reference.step()
    multipliers = {v.path: f for v, f in zip(weights, factors) if f != 1.0}
    optimizer = keras_ssl.optimizers.Adam(
        _schedule(), beta_2=0.95, weight_decay=0.1, decoupled_weight_decay=True, lr_multipliers=multipliers
    )
    for v, got, expected in zip(weights, _run_keras(optimizer, weights, grads), params):
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6, err_msg=v.path)
    config = optimizer.get_config()
    assert config["lr_multipliers"] == multipliers
    assert keras_ssl.optimizers.Adam.from_config(config).lr_multipliers == multipliers
