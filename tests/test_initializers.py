"""The `initializer=` option of the ResNets and MLP heads: PyTorch's and torchvision's distributions
(checked against torch itself), today's default kept bit for bit, and the option saved and loaded."""

import os

import keras
import numpy as np
import pytest

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


def _construction_order(name):
    # stem, then per block: branch convs 1, 2 (3), then the projection shortcut, as resnet.py builds them
    if name == "stem_conv":
        return (0, 0, 0)
    stage, block, part = name.split("_")[:3]
    return (int(stage[5:]), int(block[5:]), {"1": 1, "2": 2, "3": 3, "proj": 4}[part])


def test_the_default_keeps_todays_weights():
    # Before the option existed: Conv2D(kernel_initializer="he_normal") per conv and Keras's Dense
    # default (glorot_uniform, zero bias), each drawing its seed from Python's `random` when built.
    keras.utils.set_random_seed(7)
    model = backbones.resnet18((16, 16, 3), width=0.25)
    head = ProjectionHead(hidden_dim=64, output_dim=32, num_layers=3)
    head.build((None, 16))
    keras.utils.set_random_seed(7)
    convs = sorted(
        (l for l in model.layers if isinstance(l, keras.layers.Conv2D)), key=lambda l: _construction_order(l.name)
    )
    expected = [keras.initializers.HeNormal()(tuple(l.kernel.shape)) for l in convs]
    dense = [l for l in head.blocks if isinstance(l, keras.layers.Dense)]
    expected += [keras.initializers.GlorotUniform()(tuple(l.kernel.shape)) for l in dense]
    for layer, want in zip(convs + dense, expected, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), keras.ops.convert_to_numpy(want))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dense[-1].bias), 0.0)


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
