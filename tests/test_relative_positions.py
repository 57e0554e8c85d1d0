"""SimMIM's ViT: no absolute positions, one relative position bias shared by every block (BEiT's,
microsoft/SimMIM models/vision_transformer.py), against a NumPy port of the official forward."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_ssl.backbones.relative_positions import RelativePositionBias, relative_position_index
from keras_ssl.backbones.vit import vit
from keras_ssl.methods.ijepa import IJEPA
from keras_ssl.methods.mae import MAE
from keras_ssl.methods.msn import MSN
from keras_ssl.methods.simmim import SimMIM


def official_index(window):
    """RelativePositionBias.__init__ of SimMIM's (BEiT's) vision_transformer.py, in NumPy."""
    wh, ww = window
    num_relative_distance = (2 * wh - 1) * (2 * ww - 1) + 3
    coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij"))  # 2, Wh, Ww
    coords_flatten = coords.reshape(2, -1)
    relative_coords = (coords_flatten[:, :, None] - coords_flatten[:, None, :]).transpose(1, 2, 0).copy()
    relative_coords[:, :, 0] += wh - 1
    relative_coords[:, :, 1] += ww - 1
    relative_coords[:, :, 0] *= 2 * ww - 1
    index = np.zeros((wh * ww + 1,) * 2, dtype=int)
    index[1:, 1:] = relative_coords.sum(-1)
    index[0, 0:] = num_relative_distance - 3
    index[0:, 0] = num_relative_distance - 2
    index[0, 0] = num_relative_distance - 1
    return index


def np_(x):
    return ops.convert_to_numpy(x)


def images(n=3, size=16, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3)).astype("float32")


def relative_vit(**kw):
    return vit(16, 4, 16, 2, 2, positions="relative", layerscale=0.1, **kw)


def randomised(model):
    """Random values in the table (it starts at zero) and LayerScale, so the test sees them."""
    rng = np.random.default_rng(1)
    for weight in model.weights:
        if "table" in weight.path or "gamma" in weight.path:
            weight.assign(rng.normal(size=weight.shape).astype("float32"))
    return model


def official_forward(model, x, attention_mask=None, grid=None):
    """VisionTransformerForSimMIM.forward_features after the patch embedding: the class token without a
    position, then `Block(x, rel_pos_bias)` (logits `q k^T * scale + bias`, LayerScale), the final norm."""
    table = np_(model.rel_pos_bias.table)
    height, width = grid or (math.isqrt(x.shape[1]),) * 2
    index = official_index((model.grid_size, model.grid_size))
    if (height, width) != (model.grid_size,) * 2:  # a crop: its patches' own offsets in the training grid
        keep = np.array([r * model.grid_size + c for r in range(height) for c in range(width)])
        index = index[np.ix_(np.r_[0, keep + 1], np.r_[0, keep + 1])]
    bias = table[index].transpose(2, 0, 1)  # (heads, T, T)
    cls = np_(model.pos_embed.class_token)
    h = np.concatenate([np.broadcast_to(cls, (len(x), 1, cls.shape[-1])), x], axis=1)

    def ln(z, layer):
        mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
        return (z - mu) / np.sqrt(var + 1e-6) * np_(layer.gamma) + np_(layer.beta)

    def dense(z, layer):
        return z @ np_(layer.kernel) + np_(layer.bias)

    b, n, d = h.shape
    for block in model.blocks:
        qkv = dense(ln(h, block.norm1), block.qkv).reshape(b, n, 3, block.heads, d // block.heads)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        logits = q * (d // block.heads) ** -0.5 @ k.transpose(0, 1, 3, 2) + bias[None]
        if attention_mask is not None:
            keys = np.concatenate([np.ones((b, 1), bool), attention_mask], axis=1)
            logits = np.where(keys[:, None, None, :], logits, -np.inf)
        attn = np.exp(logits - logits.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        h = h + np_(block.gamma1) * dense((attn @ v).transpose(0, 2, 1, 3).reshape(b, n, d), block.proj)
        m = dense(ln(h, block.norm2), block.fc1)
        m = m * 0.5 * (1 + np.vectorize(math.erf)(m / np.sqrt(2)))
        h = h + np_(block.gamma2) * dense(m, block.fc2)
    return ln(h, model.norm)


def test_the_index_is_the_official_one_and_a_crop_reads_its_own_offsets():
    for window in [(4, 4), (3, 5), (1, 2)]:
        np.testing.assert_array_equal(relative_position_index(window, window), official_index(window))
    official = official_index((4, 4))
    crop = relative_position_index((2, 3), (4, 4))
    keep = np.array([r * 4 + c for r in range(2) for c in range(3)])  # the crop's patches in the 4x4 grid
    np.testing.assert_array_equal(crop, official[np.ix_(np.r_[0, keep + 1], np.r_[0, keep + 1])])
    np.testing.assert_array_equal(relative_position_index((2, 3), (4, 4), class_token=False), crop[1:, 1:])
    with pytest.raises(ValueError, match="covers grids up to that size, got 5x4"):
        relative_position_index((5, 4), (4, 4))


def test_the_vit_adds_the_shared_bias_in_every_block_as_the_official_forward():
    model = randomised(relative_vit())
    x = images()
    assert [w.path for w in model.pos_embed.weights] == ["pos_embed/class_token"]  # USE_APE False
    assert tuple(model.rel_pos_bias.table.shape) == (7 * 7 + 3, 2)
    patches = np_(model.embed_patches(x))
    np.testing.assert_allclose(patches, np_(model.patch_embed(x)).reshape(3, 16, 16), atol=1e-6)  # no positions
    expected = official_forward(model, patches)
    np.testing.assert_allclose(np_(model.encode_tokens(model.embed_patches(x))), expected, atol=1e-4)
    np.testing.assert_allclose(np_(model(x)), expected[:, 0], atol=1e-4)
    crop = x[:, :8, :8]
    np.testing.assert_allclose(
        np_(model(crop)), official_forward(model, np_(model.embed_patches(crop)))[:, 0], atol=1e-4
    )
    # An attention mask joins the bias (PyTorch's kernel takes one of the two).
    mask = np.random.default_rng(2).random((3, 16)) < 0.6
    got = np_(model.encode_tokens(model.embed_patches(x), attention_mask=mask))
    np.testing.assert_allclose(got, official_forward(model, patches, mask), atol=1e-4)


def test_the_table_starts_at_zero_learns_in_simmim_and_saves(tmp_path):
    encoder = relative_vit(pool="mean", initializer="beit")
    assert not np.any(np_(encoder.rel_pos_bias.table))  # BEiT's and SimMIM's torch.zeros
    model = SimMIM(encoder, mask_patch_size=8, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    data = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype("uint8")
    model.fit(data, batch_size=4, epochs=1, verbose=0)
    table = np_(encoder.rel_pos_bias.table)
    assert np.all(np.isfinite(table)) and np.any(table)
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config()["positions"] == "relative"
    np.testing.assert_allclose(np_(loaded(images())), np_(encoder(images())), atol=1e-5)


def test_methods_that_encode_patch_subsets_and_bad_options_are_refused():
    for method, kwargs in [(MAE, {}), (IJEPA, {}), (MSN, {})]:
        with pytest.raises(TypeError, match=f"{method.__name__} encodes a subset of the patch tokens"):
            method(relative_vit(), **kwargs)
    with pytest.raises(ValueError, match="no entries for register tokens"):
        relative_vit(num_registers=2)
    model = relative_vit()
    with pytest.raises(ValueError, match="full square patch grids, got 12 tokens"):
        model.encode_tokens(model.embed_patches(images())[:, :12])
    with pytest.raises(ValueError, match="embeds square patch grids for `encode_tokens`, got 1x4 patches"):
        model.embed_patches(images()[:, :4])
    np.testing.assert_allclose(  # the model itself takes it: its grid is known
        np_(model(images()[:, :4])),
        official_forward(model, np_(model.patch_embed(images()[:, :4])).reshape(3, 4, 16), grid=(1, 4))[:, 0],
        atol=1e-4,
    )
    with pytest.raises(ValueError, match="covers grids up to that size, got 5x5"):
        model(images(size=20))
    layer = RelativePositionBias(heads=2, class_token=False)
    assert tuple(layer(ops.zeros((1, 3, 3, 4))).shape) == (1, 2, 9, 9)
    assert RelativePositionBias.from_config(layer.get_config()).class_token is False
