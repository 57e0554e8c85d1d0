"""ViT backbone and patch masking: shapes, NumPy references, other sizes, saving."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_ssl.backbones.vit import (
    ClassTokenPositionEmbedding,
    TransformerBlock,
    ViT,
    vit,
    vit_tiny,
)
from keras_ssl.layers.masking import RandomMasking, num_visible, patchify, random_masking, take_tokens, unpatchify


def np_(x):
    return ops.convert_to_numpy(x)


def small_vit(**kw):
    return vit(image_size=16, patch_size=4, dim=32, depth=2, heads=2, **kw)


def images(n=4, size=16, channels=3, seed=0):
    return np.random.default_rng(seed).random((n, size, size, channels)).astype("float32")


# ----------------------------------------------------------------- patches
def test_patchify_matches_numpy_reference_and_unpatchify_inverts_it():
    x = images(2, 8, 3).reshape(2, 8, 8, 3)
    x = np.concatenate([x, x[:, :, :4]], axis=2)  # non-square: 8 x 12
    p = patchify(x, 4)
    assert p.shape == (2, 6, 48)
    # Patch (1, 2) (second row, third column) is patch 5, pixels row by row, channels last.
    np.testing.assert_array_equal(np_(p)[:, 5], x[:, 4:8, 8:12, :].reshape(2, -1))
    np.testing.assert_array_equal(np_(unpatchify(p, 4, (8, 12), 3)), x)


def test_patch_helpers_reject_bad_sizes():
    with pytest.raises(ValueError, match="patch_size 5"):
        patchify(images(1, 16), 5)
    with pytest.raises(ValueError, match="expected patches"):
        unpatchify(ops.zeros((1, 16, 48)), 4, 32, 3)


# ----------------------------------------------------------------- masking
def test_random_masking_keeps_the_right_tokens_per_sample():
    batch, n, d = 6, 16, 5
    tokens = np.arange(batch * n * d, dtype="float32").reshape(batch, n, d)
    visible, mask, ids_restore = random_masking(ops.convert_to_tensor(tokens), 0.75, seed=3)
    visible, mask, ids_restore = np_(visible), np_(mask), np_(ids_restore)
    assert visible.shape == (batch, 4, d) and mask.shape == (batch, n)
    np.testing.assert_array_equal(mask.sum(axis=1), np.full(batch, 12))
    for b in range(batch):
        kept = visible[b, :, 0].astype(int) // d - b * n  # token index of each visible row
        assert len(set(kept)) == 4
        np.testing.assert_array_equal(np.sort(kept), np.flatnonzero(mask[b] == 0))
        # ids_restore is a permutation whose first `keep` shuffled slots are the visible tokens.
        assert sorted(ids_restore[b]) == list(range(n))
        np.testing.assert_array_equal(ids_restore[b][kept], np.arange(4))
    # Masks differ between samples (per-sample noise).
    assert len({tuple(m) for m in mask}) > 1


def test_ids_restore_puts_visible_and_mask_tokens_back_in_place():
    tokens = ops.convert_to_tensor(images(3, 4).reshape(3, 16, 3))
    visible, mask, ids_restore = random_masking(tokens, 0.5, seed=0)
    filler = ops.zeros((3, 8, 3))
    shuffled = np.concatenate([np_(visible), np_(filler)], axis=1)
    restored = np.take_along_axis(shuffled, np_(ids_restore)[..., None], axis=1)
    keep = np_(mask) == 0
    np.testing.assert_array_equal(restored[keep], np_(tokens)[keep])
    assert np.all(restored[~keep] == 0)


def test_random_masking_layer_draws_new_masks_and_rejects_bad_ratios():
    layer = RandomMasking(0.75, seed=1)
    tokens = ops.ones((2, 16, 4))
    m1, m2 = np_(layer(tokens)[1]), np_(layer(tokens)[1])
    assert not np.array_equal(m1, m2)
    assert num_visible(64, 0.75) == 16
    # models_mae.py's int(L * (1 - r)): floored (16 at 0.7 keeps 4, not round's 5), exact counts kept.
    assert [num_visible(16, 0.7), num_visible(196, 0.75), num_visible(10, 0.7)] == [4, 49, 3]
    for ratio in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="mask_ratio"):
            RandomMasking(ratio)
    with pytest.raises(ValueError, match="keeps 0"):
        random_masking(tokens, 0.99)


# ---------------------------------------------------------------------- ViT
def test_vit_features_and_token_api_agree():
    model = small_vit()
    x = images()
    features = np_(model(x))
    assert features.shape == (4, 32)
    tokens = model.embed_patches(x)
    assert tokens.shape == (4, 16, 32)
    encoded = np_(model.encode_tokens(tokens))
    assert encoded.shape == (4, 17, 32)
    np.testing.assert_allclose(encoded[:, 0], features, atol=1e-5)
    mean_pool = small_vit(pool="mean")
    mean_pool.set_weights(model.get_weights())
    np.testing.assert_allclose(np_(mean_pool(x)), encoded[:, 1:].mean(axis=1), atol=1e-5)
    assert [b.name for b in model.blocks] == ["block_0", "block_1"]


def test_transformer_block_matches_numpy_reference():
    block = TransformerBlock(8, heads=2, mlp_ratio=2.0)
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    out = np_(block(x))

    def ln(z, layer):
        mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
        return (z - mu) / np.sqrt(var + 1e-6) * np.array(layer.gamma) + np.array(layer.beta)

    def dense(z, layer):
        return z @ np.array(layer.kernel) + np.array(layer.bias)

    qkv = dense(ln(x, block.norm1), block.qkv).reshape(2, 5, 3, 2, 4)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, heads, n, hd)
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(4)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    heads = (attn @ v).transpose(0, 2, 1, 3).reshape(2, 5, 8)
    y = x + dense(heads, block.proj)
    h = dense(ln(y, block.norm2), block.fc1)
    h = h * 0.5 * (1 + np.vectorize(math.erf)(h / np.sqrt(2)))  # exact GELU
    np.testing.assert_allclose(out, y + dense(h, block.fc2), atol=1e-4)


def test_positions_are_added_on_the_training_grid_and_interpolated_elsewhere():
    layer = ClassTokenPositionEmbedding()
    grid = np.random.default_rng(0).random((2, 4, 4, 6)).astype("float32")
    out = np_(layer(grid))
    table = np.array(layer.positions)[0].reshape(16, 6)
    cls = np_(layer.class_token + layer.class_position)[0]
    np.testing.assert_allclose(out[:, 1:], grid.reshape(2, 16, 6) + table, atol=1e-6)
    np.testing.assert_allclose(out[:, :1], np.broadcast_to(cls, (2, 1, 6)), atol=1e-6)
    # Another grid: a constant table stays constant under interpolation.
    layer.positions.assign(np.full((1, 4, 4, 6), 0.3, "float32"))
    other = np_(layer(np.zeros((2, 2, 6, 6), "float32")))
    assert other.shape == (2, 13, 6)
    np.testing.assert_allclose(other[:, 1:], 0.3, atol=1e-5)


@pytest.mark.parametrize("size", [8, 24, (16, 32)])
def test_vit_runs_on_other_image_sizes(size):
    model = small_vit()
    h, w = (size, size) if isinstance(size, int) else size
    assert model(np.zeros((2, h, w, 3), "float32")).shape == (2, 32)
    assert model.embed_patches(np.zeros((2, h, w, 3), "float32")).shape == (2, h * w // 16, 32)


def test_vit_rejects_bad_options_and_inputs():
    with pytest.raises(ValueError, match="patch_size 5 does not divide image_size 16"):
        vit(16, 5, 32, 2, 2)
    with pytest.raises(ValueError, match="pool"):
        small_vit(pool="max")
    with pytest.raises(ValueError, match="heads"):
        vit(16, 4, 30, 2, 4)
    model = small_vit()
    with pytest.raises(ValueError, match="axis -1 .* value 3"):
        model(np.zeros((2, 16, 16, 1), "float32"))
    with pytest.raises(ValueError, match="does not divide the image size 18x18"):
        model(np.zeros((2, 18, 18, 3), "float32"))


def test_factories_have_the_standard_sizes():
    # ViT-Ti/16 at 224: 5,524,416 parameters (timm's vit_tiny_patch16_224 without its classifier).
    tiny = vit_tiny(image_size=224, patch_size=16)
    assert (tiny.dim, tiny.depth, tiny.heads, len(tiny.blocks)) == (192, 12, 3, 12)
    assert tiny.output_shape == (None, 192) and tiny.input_shape == (None, 224, 224, 3)
    assert tiny.count_params() == 5_524_416


def test_vit_saves_loads_and_clones(tmp_path):
    model = small_vit(pool="mean", dropout=0.1)
    x = images()
    path = str(tmp_path / "vit.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ViT) and loaded.pool == "mean" and loaded.dropout == 0.1
    np.testing.assert_allclose(np_(loaded(x)), np_(model(x)), atol=1e-5)
    np.testing.assert_allclose(np_(loaded(x[:, :8, :8])), np_(model(x[:, :8, :8])), atol=1e-5)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(np_(clone(x)), np_(model(x)), atol=1e-5)


def test_vit_trains_in_a_plain_keras_fit():
    model = keras.Sequential([small_vit(), keras.layers.Dense(3)])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, y = images(8), np.arange(8) % 3
    before = [np.array(w) for w in model.weights]
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    changed = [not np.array_equal(a, np.array(b)) for a, b in zip(before, model.weights)]
    assert all(changed[: len(model.layers[0].weights)])  # every ViT weight got a gradient


def test_attention_mask_equals_running_on_the_kept_tokens_only():
    # Masking keys out must give the kept tokens exactly what a forward on those tokens alone
    # gives them (I-JEPA's context encoder relies on it); registers and layerscale on.
    model = small_vit(num_registers=2, layerscale=0.1)
    x = images()
    tokens = model.embed_patches(x)
    keep = np.zeros((4, 16), bool)
    rng = np.random.default_rng(1)
    ids = np.stack([np.sort(rng.choice(16, 6, replace=False)) for _ in range(4)])
    np.put_along_axis(keep, ids, True, axis=1)
    full = np_(model.encode_tokens(tokens, attention_mask=keep))
    alone = np_(model.encode_tokens(take_tokens(tokens, ids)))
    assert full.shape == (4, 17, 32) and alone.shape == (4, 7, 32)
    np.testing.assert_allclose(full[:, 0], alone[:, 0], atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(full[:, 1:], ids[..., None], axis=1), alone[:, 1:], atol=1e-4)
    # Without the mask, the other tokens do change the kept ones.
    assert np.abs(np_(model.encode_tokens(tokens))[:, 0] - alone[:, 0]).max() > 1e-3


def test_mask_tokens_replace_the_patch_embedding_before_the_positions():
    model = small_vit()
    x = images()
    mask = np.zeros((4, 16), "float32")
    mask[:, [0, 5, 7]] = 1
    token = np.random.default_rng(2).normal(size=32).astype("float32")
    masked = np_(model.embed_patches(x, mask=mask, mask_token=token))
    plain = np_(model.embed_patches(x))
    positions = np_(model.pos_embed.patch_positions(4, 4))[0]
    np.testing.assert_allclose(
        masked[:, [0, 5, 7]], np.broadcast_to(token + positions[[0, 5, 7]], (4, 3, 32)), atol=1e-5
    )
    keep = [i for i in range(16) if i not in (0, 5, 7)]
    np.testing.assert_allclose(masked[:, keep], plain[:, keep], atol=1e-6)
    with pytest.raises(ValueError, match="mask_token"):
        model.embed_patches(x, mask=mask)


def test_registers_join_the_blocks_and_leave_the_output():
    model = small_vit(num_registers=3)
    x = images()
    registers = model.pos_embed.registers
    assert tuple(registers.shape) == (1, 3, 32)
    encoded = np_(model.encode_tokens(model.embed_patches(x)))
    assert encoded.shape == (4, 17, 32)
    np.testing.assert_allclose(encoded[:, 0], np_(model(x)), atol=1e-5)
    # The registers change what the class token sees; mean pooling skips them.
    plain = small_vit()
    weights = [w for w, v in zip(model.get_weights(), model.weights) if "registers" not in v.path]
    plain.set_weights(weights)
    assert np.abs(np_(plain(x)) - np_(model(x))).max() > 1e-4
    mean_pool = small_vit(num_registers=3, pool="mean")
    mean_pool.set_weights(model.get_weights())
    np.testing.assert_allclose(np_(mean_pool(x)), encoded[:, 1:].mean(axis=1), atol=1e-5)
    with pytest.raises(ValueError, match="num_registers"):
        small_vit(num_registers=-1)


def test_layerscale_scales_both_branches():
    block = TransformerBlock(8, heads=2, layerscale=0.5)
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    out = np_(block(x))
    plain = TransformerBlock(8, heads=2)
    plain.build((2, 5, 8))
    plain.set_weights([w for w, v in zip(block.get_weights(), block.weights) if v.name not in ("gamma1", "gamma2")])
    np.testing.assert_allclose(np.array(block.gamma1), np.full(8, 0.5))
    # With scales of exactly 1 the block is the plain one.
    block.gamma1.assign(np.ones(8, "float32"))
    block.gamma2.assign(np.ones(8, "float32"))
    np.testing.assert_allclose(np_(block(x)), np_(plain(x)), atol=1e-5)
    assert np.abs(out - np_(plain(x))).max() > 1e-3
    with pytest.raises(ValueError, match="layerscale"):
        TransformerBlock(8, heads=2, layerscale=0.0)


def test_vit_with_registers_and_layerscale_saves_and_loads(tmp_path):
    model = small_vit(num_registers=2, layerscale=1e-5)
    path = str(tmp_path / "vit.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.num_registers == 2 and loaded.layerscale == 1e-5
    np.testing.assert_allclose(np_(loaded(images())), np_(model(images())), atol=1e-5)
