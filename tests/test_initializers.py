"""The `initializer=` option of the ResNets, ViTs and MLP heads: PyTorch's and torchvision's distributions
(checked against torch itself), Haiku's and SimCLR's (against draws written from their code), each
method's default its paper's, and the option saved and loaded."""

import os

import keras
import numpy as np
import pytest

import keras_ssl
from keras_ssl import backbones
from keras_ssl.layers import ProjectionHead

torch = pytest.importorskip("torch")


def _ks(a, b):
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(np.ravel(a)), np.sort(np.ravel(b))
    grid = np.concatenate([a, b])
    return np.max(np.abs(np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size))


def _same_distribution(ours, reference):
    """Same law: KS below its 1e-6 critical value, std within 6%. He-normal's std is 2.45x PyTorch's
    default, Glorot-uniform's 2x on the head below, so neither passes by luck (nor by a wrong fan)."""
    ours, reference = np.ravel(ours), np.ravel(reference)
    critical = np.sqrt(-np.log(0.5e-6) / 2) * np.sqrt((ours.size + reference.size) / (ours.size * reference.size))
    assert _ks(ours, reference) < critical, (_ks(ours, reference), critical)
    np.testing.assert_allclose(ours.std(), reference.std(), rtol=0.06)


def _kernel(model, name):
    return keras.ops.convert_to_numpy(model.get_layer(name).kernel)


def _torch_conv(kernel_shape):
    """PyTorch's default Conv2d weight for our `(kh, kw, in, out)` kernel, in our layout."""
    kh, kw, cin, cout = kernel_shape
    return torch.nn.Conv2d(cin, cout, (kh, kw), bias=False).weight.detach().numpy().transpose(2, 3, 1, 0)


def test_torch_and_torchvision_resnets_draw_as_torch_does():
    torch.manual_seed(0)
    model = backbones.resnet18((16, 16, 3), width=0.25, initializer="torch")
    vision = backbones.resnet18((16, 16, 3), width=0.25, initializer="torchvision", zero_init_residual=True)
    for name in ("stage1_block1_1_conv", "stage4_block2_2_conv", "stage3_block1_proj_conv"):
        ours = _kernel(model, name)
        _same_distribution(ours, _torch_conv(ours.shape))
        assert np.abs(ours).max() <= 1 / np.sqrt(np.prod(ours.shape[:3]))  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        # torchvision's ResNet.__init__: kaiming_normal_(mode="fan_out", nonlinearity="relu") on each conv
        ours = _kernel(vision, name)
        reference = torch.empty(ours.shape[::-1])
        torch.nn.init.kaiming_normal_(reference, mode="fan_out", nonlinearity="relu")
        _same_distribution(ours, reference.numpy())
    gammas = {l.name: keras.ops.convert_to_numpy(l.gamma) for l in vision.layers if l.name.endswith("_bn")}
    # zero_init_residual: the last BN of each residual branch only (torchvision's bn2 / bn3), the others 1
    zero = {f"stage{s}_block{b}_2_bn" for s in range(1, 5) for b in (1, 2)}
    assert {n for n, g in gammas.items() if (g == 0).all()} == zero
    assert all((g == 1).all() for n, g in gammas.items() if n not in zero)


def test_torch_head_draws_as_torch_linear_does():
    torch.manual_seed(0)
    head = ProjectionHead(hidden_dim=512, output_dim=2048, num_layers=2, batch_norm=False, initializer="torch")
    head.build((None, 256))
    dense = [l for l in head.blocks if isinstance(l, keras.layers.Dense)]
    for layer, (fan_in, fan_out) in zip(dense, ((256, 512), (512, 2048))):
        reference = torch.nn.Linear(fan_in, fan_out)
        _same_distribution(layer.kernel, reference.weight.detach().numpy())
        _same_distribution(layer.bias, reference.bias.detach().numpy())
        assert np.abs(keras.ops.convert_to_numpy(layer.bias)).max() <= 1 / np.sqrt(fan_in)


def _haiku_linear(shape, rng):
    """Haiku's `Linear` default, written from its code: `TruncatedNormal(stddev=1/sqrt(fan_in))`, i.e.
    `stddev * truncated_normal(-2, 2)`, no variance correction (drawn here by rejection)."""
    draws = rng.standard_normal(4 * int(np.prod(shape)))
    return draws[np.abs(draws) < 2][: int(np.prod(shape))].reshape(shape) / np.sqrt(shape[0])


def _dense_kernels(head):
    return [keras.ops.convert_to_numpy(l.kernel) for l in head.blocks if isinstance(l, keras.layers.Dense)]


def test_the_defaults_are_the_papers_official_inits():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # ResNets: torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu"), the official codes' ResNet.
    ours = _kernel(backbones.resnet18((16, 16, 3), width=0.5), "stage4_block1_1_conv")
    reference = torch.empty(ours.shape[::-1])
    torch.nn.init.kaiming_normal_(reference, mode="fan_out", nonlinearity="relu")
    _same_distribution(ours, reference.numpy())
    encoder = backbones.tiny_encoder((16, 16, 3), width=16)  # ours, no paper's: Keras's He-normal kept
    assert encoder.get_layer("block1_conv").kernel_initializer.__class__.__name__ == "HeNormal"
    # Heads: PyTorch's nn.Linear (MoCo v2, the layer's default), Haiku's Linear (BYOL), RandomNormal(0.01) (SimCLR).
    moco = keras_ssl.MoCoV2(encoder, hidden_dim=512, projection_dim=256, queue_size=64, split_batch_norm=False)
    for kernel in _dense_kernels(moco.projector):
        _same_distribution(kernel, torch.nn.Linear(*kernel.shape).weight.detach().numpy())
    bias = keras.ops.convert_to_numpy(moco.projector.blocks[-1].bias)
    assert 0 < np.abs(bias).max() <= 1 / np.sqrt(512)  # U(+-1/sqrt(fan_in)), not Keras's zeros
    byol = keras_ssl.BYOL(encoder, hidden_dim=512, projection_dim=256)
    for kernel in _dense_kernels(byol.projector) + _dense_kernels(byol.predictor):
        _same_distribution(kernel, _haiku_linear(kernel.shape, rng))
    simclr = keras_ssl.SimCLR(encoder, hidden_dim=512, projection_dim=256)
    for kernel in _dense_kernels(simclr.projector):
        _same_distribution(kernel, rng.normal(0.0, 0.01, kernel.shape))
    # The option: another initialisation, kept in the config.
    other = keras_ssl.BYOL(encoder, hidden_dim=512, projection_dim=256, head_initializer="keras")
    assert other.get_config()["head_initializer"] == "keras"
    glorot = keras.initializers.GlorotUniform(0)((64, 512))
    _same_distribution(_dense_kernels(other.projector)[0], keras.ops.convert_to_numpy(glorot))
    with pytest.raises(ValueError, match="`head_initializer` must be one of"):
        keras_ssl.SimSiam(encoder, head_initializer="pytorch")


# Each method's heads' Dense init, declared once (`default_head_initializer`); methods absent have fixed heads.
HEAD_INITIALIZERS = {
    **dict.fromkeys(
        ["BarlowTwins", "DeepClusterV2", "FastSiam", "MMCR", "MoCo", "MoCoV2", "MoCoV3", "NNBYOL", "NNCLR"],
        "torch",
    ),
    **dict.fromkeys(["NNSiam", "ReSSL", "SimSiam", "SupCon", "SwAV", "TiCo", "VIbCReg", "VICReg", "WMSE"], "torch"),
    "BYOL": "haiku",
    "SimCLR": "simclr",
}


def _head_initializers(model):
    heads = [l for l in keras_ssl.keras_compat.sublayers(model) if isinstance(l, ProjectionHead)]
    assert heads, type(model).__name__
    return {head.get_config()["initializer"] for head in heads}


def test_each_method_declares_its_heads_init_and_draws_them_with_it():
    exported = [getattr(keras_ssl, name) for name in keras_ssl.__all__]
    methods = [m for m in exported if isinstance(m, type) and issubclass(m, keras_ssl.SSLModel)]
    assert {keras_ssl.DINO, keras_ssl.CLIP, keras_ssl.SimCLR} <= set(methods)
    declared = {m.__name__: m.default_head_initializer for m in methods if m.default_head_initializer is not None}
    assert declared == HEAD_INITIALIZERS
    encoder = backbones.tiny_encoder((16, 16, 3), width=8)
    models = [
        keras_ssl.BYOL(encoder, hidden_dim=16, projection_dim=8),
        keras_ssl.SimCLR(encoder, hidden_dim=16, projection_dim=8),
        keras_ssl.NNBYOL(encoder, queue_size=64, hidden_dim=16, projection_dim=8),  # not BYOL's: solo-learn's
        keras_ssl.MoCo(encoder, version=3, hidden_dim=16, projection_dim=8),  # MoCo's factory: MoCoV3's
        keras_ssl.FastSiam(encoder, projection_dim=16),
    ]
    for model in models:
        expected = HEAD_INITIALIZERS[type(model).__name__]
        assert model.head_initializer == model.get_config()["head_initializer"] == expected
        assert _head_initializers(model) == {expected}, type(model).__name__
    chosen = keras_ssl.MoCo(encoder, version=2, queue_size=64, projection_dim=8, head_initializer="keras")
    assert type(chosen) is keras_ssl.MoCoV2 and _head_initializers(chosen) == {"keras"}
    assert type(chosen).from_config(chosen.get_config()).head_initializer == "keras"


def test_a_method_whose_heads_have_a_fixed_init_refuses_head_initializer():
    vit = backbones.vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2)
    with pytest.raises(TypeError, match="DINO's heads have a fixed initialisation.*takes no `head_initializer`"):
        keras_ssl.DINO(vit, head_initializer="torch")
    dino = keras_ssl.DINO(vit)
    assert dino.head_initializer is None and dino.get_config()["head_initializer"] is None
    assert keras_ssl.DINO.from_config(dino.get_config()).head_initializer is None


def test_the_option_round_trips_through_config_and_files(tmp_path):
    head = ProjectionHead(16, 8, initializer=keras.initializers.Orthogonal(gain=0.5))
    copy = ProjectionHead.from_config(head.get_config())
    kernel_init = copy.blocks[0].kernel_initializer
    assert isinstance(kernel_init, keras.initializers.Orthogonal) and kernel_init.gain == 0.5
    model = keras.Sequential([keras.Input((12,)), ProjectionHead(16, 8, output_bias=True, initializer="torch")])
    model.save(os.path.join(tmp_path, "head.keras"))
    loaded = keras.saving.load_model(os.path.join(tmp_path, "head.keras"))
    assert loaded.layers[0].get_config()["initializer"] == "torch"
    encoder = backbones.resnet18((16, 16, 3), width=0.125, initializer="torchvision", zero_init_residual=True)
    encoder.save(os.path.join(tmp_path, "encoder.keras"))
    loaded = keras.saving.load_model(os.path.join(tmp_path, "encoder.keras"))
    conv = loaded.get_layer("stage2_block1_1_conv").kernel_initializer.get_config()
    assert (conv["scale"], conv["mode"], conv["distribution"]) == (2.0, "fan_out", "untruncated_normal")
    assert isinstance(loaded.get_layer("stage2_block1_2_bn").gamma_initializer, keras.initializers.Zeros)
    for a, b in zip(encoder.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize("bad", ["pytorch", 3])
def test_an_unknown_initializer_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="`initializer` must be one of"):
        backbones.resnet18((16, 16, 3), width=0.125, initializer=bad)
    with pytest.raises(ValueError, match="`initializer` must be one of"):
        ProjectionHead(16, 8, initializer=bad)


def _gammas(model):
    return {l.name: keras.ops.convert_to_numpy(l.gamma) for l in model.layers if l.name.endswith("_bn")}


def _truncated(shape, stddev, rng):
    """`stddev * truncated_normal(-2, 2)`, drawn by rejection: Haiku's `TruncatedNormal(stddev)` (its Conv2D
    default with `stddev = 1/sqrt(fan_in)`) and TF's `VarianceScaling()` (SimCLR's convolutions, whose
    `stddev = sqrt(1/fan_in) / 0.8796...` undoes the truncation's shrinkage)."""
    draws = rng.standard_normal(4 * int(np.prod(shape)))
    return stddev * draws[np.abs(draws) < 2][: int(np.prod(shape))].reshape(shape)


def test_the_cli_builds_each_methods_official_resnet():
    from keras_ssl.cli import build_parser
    from keras_ssl.cli.building import _build_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # The official codes, read there: SimSiam's builder.py and Barlow Twins', VICReg's and MoCo v3's
    # main: resnet50(zero_init_residual=True); SimCLR's TF ResNet and Haiku's (BYOL): the last BN of each
    # block starts at 0; MoCo v2, DINO and SwAV: torchvision's defaults.
    official = {"simsiam": (True, "torchvision"), "simclr": (True, "simclr"), "byol": (True, "haiku")}
    official |= {"moco": (False, "torchvision"), "dino": (False, "torchvision"), "barlow_twins": (True, "torchvision")}
    for name, (zero, init) in official.items():
        args = build_parser().parse_args(["pretrain", "--method", name, "--backbone", "resnet18", "--width", "0.25"])
        method = keras_ssl.methods.METHODS[name]
        encoder = _build_model(args, method, "resnet18", (16, 16, 3), None, 64).encoder
        last = {f"stage{s}_block{b}_2_bn" for s in range(1, 5) for b in (1, 2)}
        assert all((g == 0).all() == (zero and n in last) for n, g in _gammas(encoder).items()), name
        # A 3x3 convolution against an independent draw of the official init (9216 weights: fan-in and
        # fan-out give the same std here, so the truncation bound tells torchvision's from SimCLR's).
        ours = _kernel(encoder, "stage2_block2_1_conv")
        fan_in = np.prod(ours.shape[:3])
        if init == "torchvision":
            reference = torch.empty(ours.shape[::-1])
            torch.nn.init.kaiming_normal_(reference, mode="fan_out", nonlinearity="relu")
            reference, bound = reference.numpy(), np.inf
            assert np.abs(ours).max() > 2 * ours.std(), name  # untruncated
        else:
            stddev = 1 / np.sqrt(fan_in) / (1.0 if init == "haiku" else 0.87962566103423978)
            reference, bound = _truncated(ours.shape, stddev, rng), 2 * stddev
        _same_distribution(ours, reference)
        assert np.abs(ours).max() <= bound * (1 + 1e-6), name


def test_vit_weights_draw_as_torch_trunc_normal_and_dinos_last_layer_as_torch_linear():
    # The official ViT codes' `trunc_normal_(std=.02)` (absolute cut +-2: a plain N(0, 0.02^2)), and
    # DINO's last layer, created after its head's init and so left at nn.Linear's default.
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    encoder = backbones.vit(image_size=32, patch_size=4, dim=64, depth=1, heads=2)
    positions = keras.ops.convert_to_numpy(encoder.get_layer("pos_embed").positions)
    _same_distribution(positions, torch.nn.init.trunc_normal_(torch.empty(20000), std=0.02).numpy())
    head = keras_ssl.layers.DINOHead(512, hidden_dim=64, bottleneck_dim=64)
    head.build((None, 64))
    _same_distribution(
        keras.ops.convert_to_numpy(head.mlp[0].kernel),
        torch.nn.init.trunc_normal_(torch.empty(20000), std=0.02).numpy(),
    )
    last = torch.nn.Linear(64, 512, bias=False).weight.detach().numpy()
    _same_distribution(keras.ops.convert_to_numpy(head.last_v), last)
    with pytest.raises(ValueError, match="stddev"):
        keras_ssl.initializers.trunc_normal(1.0)


def _leading_values(model):
    return [
        (w.path, np.ravel(keras.ops.convert_to_numpy(w))[:16]) for w in model.trainable_weights if np.prod(w.shape) >= 4
    ]


@pytest.mark.parametrize("method", ["mae", "ijepa", "msn", "dino_bn"])
def test_each_weight_is_its_own_draw_and_follows_the_global_seed(method):
    # One unseeded Keras initialiser reused for several weights draws the same values into each, and
    # picks its seed at import, so `set_random_seed` did not reach the ViT's tokens and positions.
    def build(seed):
        keras.utils.set_random_seed(seed)
        vit = backbones.vit(image_size=16, patch_size=4, dim=32, depth=2, heads=2, num_registers=2)
        if method == "mae":
            return keras_ssl.MAE(vit, decoder_dim=32, decoder_depth=1)
        if method == "ijepa":
            return keras_ssl.IJEPA(vit, predictor_dim=32, predictor_depth=1)
        if method == "msn":
            return keras_ssl.MSN(vit, hidden_dim=32, output_dim=32, num_prototypes=8)
        return keras_ssl.DINO(vit, output_dim=32, hidden_dim=32, bottleneck_dim=32, use_bn_in_head=True)

    first = _leading_values(build(0))
    for i, (name_a, a) in enumerate(first):
        for name_b, b in first[i + 1 :]:
            n = min(a.size, b.size)
            assert np.std(a[:n]) == 0 or not np.allclose(a[:n], b[:n]), (name_a, name_b)
    again, other = _leading_values(build(0)), _leading_values(build(1))
    for (name, a), (_, b), (_, c) in zip(first, again, other):
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert np.std(a) == 0 or not np.allclose(a, c), name


def _vit_kernels(encoder, block):
    """The patch kernel and block `block`'s qkv, attention output and fc2 kernels, as NumPy."""
    parts = encoder.blocks[block]
    kernels = [encoder.patch_embed.projection.kernel, parts.qkv.kernel, parts.proj.kernel, parts.fc2.kernel]
    return [keras.ops.convert_to_numpy(k) for k in kernels]


def _torch_vit_draws(preset, patch_kernel, *linears, layer):
    """The official codes' draws of a patch kernel `(cout, cin, p, p)` and the qkv, attention output and
    fc2 weights `(out, in)` of block `layer` (1-based), made by torch as each code makes them, in our layouts."""
    cout, cin, p = patch_kernel[3], patch_kernel[2], patch_kernel[0]
    patch, (qkv, proj, fc2) = torch.empty(cout, cin, p, p), [torch.empty(shape[::-1]) for shape in linears]
    if preset in ("timm", "dinov2", "msn"):  # DINO/iBOT/DINOv2/MSN _init_weights: Linear trunc_normal_(std=.02)
        patch = torch.nn.Conv2d(cin, cout, p, p).weight.detach()  # untouched: Conv2d's default
        if preset == "msn":  # deit.py: Conv2d kaiming_normal_(mode="fan_in", nonlinearity="relu")
            torch.nn.init.kaiming_normal_(patch, mode="fan_in", nonlinearity="relu")
        for w in (qkv, proj, fc2):
            torch.nn.init.trunc_normal_(w, std=0.02)
    elif preset == "mae":  # models_mae.py: xavier_uniform_ on Linear and on the patch kernel as a matrix
        torch.nn.init.xavier_uniform_(patch.view(cout, -1))
        for w in (qkv, proj, fc2):
            torch.nn.init.xavier_uniform_(w)
    else:  # I-JEPA and BEiT (SimMIM): trunc_normal_(std=.02) everywhere (BEiT cuts at +-std)
        cut = 0.02 if preset == "beit" else 2.0
        for w in (patch, qkv, proj, fc2):
            torch.nn.init.trunc_normal_(w, std=0.02, a=-cut, b=cut)
        if preset == "beit":  # fix_init_weight; I-JEPA's helper.init_model redraws every Linear after it
            proj /= np.sqrt(2.0 * layer)
            fc2 /= np.sqrt(2.0 * layer)
    return [patch.numpy().transpose(2, 3, 1, 0)] + [w.numpy().T for w in (qkv, proj, fc2)]


@pytest.mark.parametrize("preset", ["timm", "dinov2", "msn", "mae", "ijepa", "beit", "keras"])
def test_each_vit_preset_draws_as_its_official_code(preset):
    torch.manual_seed(0)
    # 8-px patches of 3 channels, dim 128: the patch kernel has 24576 weights, a block's qkv 49152.
    encoder = backbones.vit(image_size=32, patch_size=8, dim=128, depth=2, heads=2, num_registers=4, initializer=preset)
    patch, qkv, proj, fc2 = _vit_kernels(encoder, block=1)
    if preset == "keras":  # the former ViT: Glorot-uniform (torch's xavier_uniform_), the conv's fans times p * p
        bound = np.sqrt(6 / (64 * (3 + 128)))
        references = [torch.empty(patch.shape).uniform_(-bound, bound).numpy()]
        references += [torch.nn.init.xavier_uniform_(torch.empty(k.shape[::-1])).numpy().T for k in (qkv, proj, fc2)]
    else:
        references = _torch_vit_draws(preset, patch.shape, qkv.shape, proj.shape, fc2.shape, layer=2)
    for ours, reference in zip((patch, qkv, proj, fc2), references, strict=True):
        _same_distribution(ours, reference)
    bias = keras.ops.convert_to_numpy(encoder.patch_embed.projection.bias)
    if preset in ("timm", "dinov2", "mae"):  # Conv2d's default bias, uniform in +-1/sqrt(cin * p * p)
        assert 0 < np.abs(bias).max() <= 1 / np.sqrt(3 * 64)
    else:
        assert not bias.any()
    pos = encoder.pos_embed
    tokens, positions = (keras.ops.convert_to_numpy(w) for w in (pos.class_token, pos.positions))
    registers = keras.ops.convert_to_numpy(pos.registers)
    if preset == "dinov2":  # init_weights: cls_token and register_tokens normal_(std=1e-6)
        assert 0 < np.abs(np.concatenate([tokens.ravel(), registers.ravel()])).max() < 1e-5
    if preset == "beit":
        for w in (patch, qkv, tokens, positions, registers):
            assert np.abs(w).max() <= 0.02 * (1 + 1e-5)
        assert np.abs(fc2).max() <= 0.01 * (1 + 1e-5)
    assert encoder.get_config()["initializer"] == preset


def test_the_vit_option_round_trips_and_is_checked(tmp_path):
    keras.utils.set_random_seed(0)
    encoder = backbones.vit(image_size=16, patch_size=4, dim=16, depth=2, heads=2, initializer="beit")
    path = os.path.join(tmp_path, "vit.keras")
    encoder.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config()["initializer"] == "beit"
    for a, b in zip(encoder.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # The layers keep their own initialisers in their configs, BEiT's cut normal among them.
    block = type(encoder.blocks[1]).from_config(encoder.blocks[1].get_config())
    output = block.output_initializer
    assert isinstance(output, keras_ssl.initializers.CutNormal) and np.isclose(output.stddev, 0.01)
    # The same global seed, the same weights (the rescaled ones too); each weight its own draw.
    keras.utils.set_random_seed(0)
    again = backbones.vit(image_size=16, patch_size=4, dim=16, depth=2, heads=2, initializer="beit")
    for a, b in zip(encoder.weights, again.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    qkv0, qkv1 = (keras.ops.convert_to_numpy(b.qkv.kernel) for b in encoder.blocks)
    assert not np.allclose(qkv0, qkv1)
    with pytest.raises(ValueError, match=r"`initializer` must be one of \('timm', 'dinov2'.*got 'deit'"):
        backbones.vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, initializer="deit")


def test_the_cli_builds_each_methods_official_vit(monkeypatch):
    from keras_ssl.cli import build_parser
    from keras_ssl.cli.building import _build_model

    # MAE's models_mae.py, I-JEPA's and DINOv2's vision_transformer.py, MSN's deit.py, SimMIM's BEiT
    # code; DINO and iBOT: timm's _init_weights.
    official = {"dino": "timm", "ibot": "timm", "dinov2": "dinov2", "msn": "msn"}
    official |= {"mae": "mae", "ijepa": "ijepa", "simmim": "beit"}
    methods = keras_ssl.methods.METHODS
    assert {name: m.vit_init for name, m in methods.items() if m.token_encoder or name == "dino"} == official
    get = backbones.get

    def small(name, input_shape, **kwargs):  # the CLI's call, with a small ViT: the test is the option
        assert name == "vit_tiny"
        return backbones.vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, initializer=kwargs["vit_init"])

    monkeypatch.setattr(backbones, "get", small)
    for name, init in official.items():
        args = build_parser().parse_args(["pretrain", "--method", name, "--backbone", "vit_tiny"])
        encoder = _build_model(args, methods[name], "vit_tiny", (16, 16, 3), None, 64).encoder
        assert encoder.get_config()["initializer"] == init, name
    monkeypatch.setattr(backbones, "get", get)
    assert backbones.get("vit_tiny", (16, 16, 3), vit_init="mae").get_config()["initializer"] == "mae"
