"""The position table's resize equals PyTorch's `F.interpolate`, the official ViT codes', on every backend."""

import keras
import numpy as np
import pytest

import keras_ssl
from keras_ssl.backbones.position_resize import resize_matrix, resize_positions

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("size", [(8, 4, 8, 4), (14, 14, 6, 6), (4, 4, 7, 5), (7, 5, 3, 9)])
def test_resize_equals_torch_interpolate(interpolation, size):
    grid_h, grid_w, height, width = size
    table = np.random.default_rng(0).normal(size=(1, grid_h, grid_w, 6)).astype("float32")
    got = keras.ops.convert_to_numpy(resize_positions(keras.ops.convert_to_tensor(table), height, width, interpolation))
    nchw = torch.from_numpy(table).permute(0, 3, 1, 2)
    extra = {} if interpolation == "nearest" else {"align_corners": False}
    want = F.interpolate(nchw, size=(height, width), mode=interpolation, **extra).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_bicubic_weights_by_hand():
    # 2 -> 4: output 1 samples source 0.25: taps -1, 0, 1, 2 at distances 1.25, 0.25, 0.75, 1.75 (a = -0.75),
    # the taps outside the table folded onto its edges.
    a = -0.75
    near = lambda x: (a + 2) * x**3 - (a + 3) * x**2 + 1
    far = lambda x: a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    w = [far(1.25), near(0.25), near(0.75), far(1.75)]
    np.testing.assert_allclose(resize_matrix(2, 4)[1], [w[0] + w[1], w[2] + w[3]], rtol=1e-6)


def test_vit_local_crop_positions_follow_torch():
    vit = keras_ssl.backbones.vit(image_size=32, patch_size=4, dim=8, depth=1, heads=2)
    table = keras.ops.convert_to_numpy(vit.pos_embed.positions)
    got = keras.ops.convert_to_numpy(vit.pos_embed.patch_positions(4, 4)).reshape(1, 4, 4, 8)
    want = F.interpolate(torch.from_numpy(table).permute(0, 3, 1, 2), size=(4, 4), mode="bicubic", align_corners=False)
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), atol=2e-6)


def test_other_methods_and_bad_names():
    table = keras.ops.ones((1, 4, 4, 2))
    if keras.backend.backend() != "torch":  # ops.image.resize's other methods (the torch backend has none)
        assert tuple(resize_positions(table, 2, 2, "lanczos3").shape) == (1, 2, 2, 2)
    with pytest.raises(ValueError, match="interpolation"):
        resize_matrix(4, 2, "area")
