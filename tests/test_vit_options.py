"""The official codes' ViT options: MAE's and I-JEPA's fixed 2D sine-cosine positions (and MAE's
decoder's), I-JEPA's encoder without a class token, and the ViT each method's CLI run builds."""

import keras
import numpy as np
import pytest
from keras import ops
from numpy_refs_ijepa import get_2d_sincos_pos_embed

from keras_ssl import backbones
from keras_ssl.backbones.decoders import MAEDecoder
from keras_ssl.backbones.transformer import ClassTokenPositionEmbedding
from keras_ssl.backbones.vit import ViT, vit
from keras_ssl.methods import METHODS
from keras_ssl.methods.ijepa import IJEPA
from keras_ssl.methods.mae import MAE


def mae_table(dim, grid):
    # MAE's util/pos_embed.py get_2d_sincos_pos_embed(..., cls_token=True): the same table as
    # I-JEPA's (which copied it), with a zero row for the class token in front.
    return np.concatenate([np.zeros((1, dim)), get_2d_sincos_pos_embed(dim, grid)])


def images(n=4, size=16):
    return np.random.default_rng(0).random((n, size, size, 3)).astype("float32")


def test_a_sincos_vit_adds_the_official_table_and_a_zero_class_position():
    model = vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, positions="sincos")
    x = images()
    grid = ops.convert_to_numpy(model.patch_embed(x)).reshape(4, 16, 16)
    tokens = ops.convert_to_numpy(model.embed_patches(x))
    np.testing.assert_allclose(tokens - grid, np.broadcast_to(mae_table(16, 4)[1:], (4, 16, 16)), atol=1e-6)
    layer = model.pos_embed
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.class_position), 0)
    # Fixed, as the official `requires_grad=False`: only the class token is trainable there.
    assert [w.path for w in layer.trainable_weights] == [layer.class_token.path]


def test_a_sincos_vit_keeps_its_table_through_training_saving_and_loading(tmp_path):
    model = keras.Sequential([vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, positions="sincos")])
    model.add(keras.layers.Dense(3))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    encoder = model.layers[0]
    before = [np.array(encoder.pos_embed.positions), np.array(encoder.pos_embed.class_token)]
    model.fit(images(8), np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_array_equal(np.array(encoder.pos_embed.positions), before[0])
    assert not np.array_equal(np.array(encoder.pos_embed.class_token), before[1])  # the rest learns
    path = str(tmp_path / "vit.keras")
    encoder.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ViT) and loaded.get_config()["positions"] == "sincos"
    assert len(loaded.pos_embed.trainable_weights) == 1
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded(images())), ops.convert_to_numpy(encoder(images())), atol=1e-5
    )


def test_maes_decoder_has_the_official_fixed_table():
    decoder = MAEDecoder(16, 48, dim=8, depth=1, heads=2)
    decoder.build((None, 5, 32))
    np.testing.assert_allclose(ops.convert_to_numpy(decoder.positions)[0], mae_table(8, 4), atol=1e-6)
    assert decoder.positions.path not in [w.path for w in decoder.trainable_weights]
    assert MAEDecoder.from_config(decoder.get_config()).position_type == "sincos"
    learned = MAEDecoder(16, 48, dim=8, depth=1, heads=2, positions="learned")
    learned.build((None, 5, 32))
    assert learned.positions.path in [w.path for w in learned.trainable_weights]


def test_the_cli_builds_each_methods_official_vit(monkeypatch):
    from keras_ssl.cli.building import _build_encoder

    asked = {}
    monkeypatch.setattr(backbones, "get", lambda name, shape, **kwargs: asked.update(kwargs))
    built = {}
    for name, method in METHODS.items():
        if method.token_encoder or name == "dino":
            _build_encoder("vit_tiny", (16, 16, 3), 1.0, 16, tokens=method.token_encoder, method=method)
            built[name] = asked["vit_options"]
    monkeypatch.undo()
    # models_mae.py and I-JEPA's vision_transformer.py fix their positions (get_2d_sincos_pos_embed,
    # requires_grad=False), and I-JEPA's has no class token; DINOv2's ssl_default_config.yaml sets
    # layerscale 1e-5 and drop path 0.3 in every block, SimMIM's config.py INIT_VALUES 0.1, USE_APE False
    # and USE_SHARED_RPB True, its ViT-B pretraining DROP_PATH_RATE 0.1 and fine-tuning USE_MEAN_POOLING
    # True; main_dino.py's
    # --drop_path_rate and main_ibot.py's --drop_path are 0.1;
    # MSN's ViT has none of these. All seven standardise their pixels with ImageNet's mean and std
    # (transforms.Normalize in main_pretrain.py, src/transforms.py, data/transforms.py, data_simmim.py,
    # main_dino.py, main_ibot.py, src/data_manager.py).
    official = {
        "mae": {"positions": "sincos"},
        "ijepa": {"positions": "sincos", "class_token": False, "pool": "mean"},
        "dinov2": {"layerscale": 1e-5, "drop_path": 0.3, "drop_path_uniform": True},
        "simmim": {"layerscale": 0.1, "drop_path": 0.1, "positions": "relative", "pool": "mean"},
        "dino": {"drop_path": 0.1},
        "ibot": {"drop_path": 0.1},
        "msn": {},
    }
    official = {name: dict(options, pixel_norm="imagenet") for name, options in official.items()}
    assert built == {name: official.get(name, {}) for name in built}
    assert {"mae", "ijepa", "dino", "ibot", "dinov2", "msn", "simmim"} <= set(built)
    encoder = backbones.get("vit_tiny", (16, 16, 3), vit_options=official["ijepa"])
    config = encoder.get_config()
    assert (config["positions"], config["class_token"], config["pool"]) == ("sincos", False, "mean")
    assert config["pixel_norm"] == "imagenet"
    assert backbones.get("vit_tiny", (16, 16, 3)).get_config()["positions"] == "learned"


def test_a_vit_without_a_class_token_runs_its_blocks_on_the_patches_alone():
    model = vit(image_size=16, patch_size=4, dim=16, depth=2, heads=2, class_token=False, pool="mean")
    x = images()
    tokens = model.embed_patches(x)
    encoded = model.encode_tokens(tokens)
    assert tuple(encoded.shape) == (4, 16, 16) and not hasattr(model.pos_embed, "class_token")
    y = tokens  # the official forward: patches + positions, blocks, norm; nothing prepended
    for block in model.blocks:
        y = block(y)
    np.testing.assert_allclose(ops.convert_to_numpy(encoded), ops.convert_to_numpy(model.norm(y)), atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(model(x)), ops.convert_to_numpy(encoded).mean(axis=1), atol=1e-5)
    # With registers: they join the blocks and leave the output.
    with_registers = vit(16, 4, 16, 1, 2, class_token=False, pool="mean", num_registers=2)
    assert tuple(with_registers.encode_tokens(with_registers.embed_patches(x)).shape) == (4, 16, 16)
    mask = np.arange(16)[None].repeat(4, 0) < 10
    assert tuple(with_registers.encode_tokens(with_registers.embed_patches(x), attention_mask=mask).shape) == (
        4,
        16,
        16,
    )


def test_ijepa_trains_on_its_official_encoder_and_the_class_token_readers_refuse_it(tmp_path):
    encoder = vit(16, 4, 16, 1, 2, class_token=False, pool="mean", positions="sincos", initializer="ijepa")
    model = IJEPA(encoder, predictor_dim=8, predictor_depth=1, predictor_heads=2, num_targets=2, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    out = model(np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype("uint8"), training=True)
    assert tuple(out["target"].shape) == (4, 16, 16)  # every patch a target token, none dropped
    history = model.fit(np.random.default_rng(1).integers(0, 256, (8, 16, 16, 3)).astype("uint8"), batch_size=4)
    assert np.isfinite(history.history["loss"]).all()
    path = str(tmp_path / "encoder.keras")
    model.encoder.save(path)
    assert keras.saving.load_model(path).get_config()["class_token"] is False
    with pytest.raises(TypeError, match="MAE reads the encoder's class token, and this ViT has none"):
        MAE(vit(16, 4, 16, 1, 2, class_token=False, pool="mean"))


def test_bad_position_options_are_refused():
    with pytest.raises(ValueError, match="`positions` must be 'learned', 'sincos' or 'relative', got 'rope'"):
        vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, positions="rope")
    with pytest.raises(ValueError, match="sine-cosine positions need `dim` divisible by 4, got 18"):
        vit(image_size=16, patch_size=4, dim=18, depth=1, heads=2, positions="sincos")
    with pytest.raises(ValueError, match="square patch grid, got 12 patches"):
        MAEDecoder(12, 48, dim=8, positions="sincos")
    with pytest.raises(ValueError, match="`positions` must be"):
        ClassTokenPositionEmbedding(positions="fixed")
    with pytest.raises(ValueError, match="a ViT without a class token pools by 'mean', got pool='cls'"):
        vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, class_token=False)


def _branch_outcomes(block, x, keep):
    """timm's Block with DropPath (what DINO, iBOT and SimMIM run), per sample, for each choice of the two
    coins: `x + dp(attn(norm1(x)))`, then `+ dp(mlp(norm2(x)))`, `dp` either 0 or `1 / keep` times."""
    outcomes = []
    for s1 in (0.0, 1.0 / keep):
        h = x + s1 * ops.convert_to_numpy(block.attention(block.norm1(x)))
        for s2 in (0.0, 1.0 / keep):
            mlp = ops.convert_to_numpy(block.fc2(block.fc1(block.norm2(h))))
            outcomes.append(h + s2 * mlp)
    return np.stack(outcomes, axis=1)  # (B, 4, T, D)


def test_drop_path_drops_each_samples_branches_as_timm_does():
    from keras_ssl.backbones.transformer import TransformerBlock

    block = TransformerBlock(8, 2, drop_path=0.4, seed=3)
    x = np.random.default_rng(0).normal(size=(3000, 3, 8)).astype("float32")
    out = ops.convert_to_numpy(block(x, training=True))
    errors = np.abs(_branch_outcomes(block, x, 0.6) - out[:, None]).max(axis=(2, 3))  # (B, 4)
    assert errors.min(axis=1).max() < 1e-4  # every sample is one of the four outcomes
    picked = errors.argmin(axis=1)
    kept_attention, kept_mlp = picked >= 2, picked % 2 == 1
    # Each branch kept with probability 0.6, independently (3000 samples: 3 sigma is 0.027).
    assert abs(kept_attention.mean() - 0.6) < 0.03 and abs(kept_mlp.mean() - 0.6) < 0.03
    assert abs((kept_attention & kept_mlp).mean() - 0.36) < 0.03
    # Outside training nothing is dropped or scaled.
    np.testing.assert_allclose(ops.convert_to_numpy(block(x[:4])), _branch_outcomes(block, x[:4], 1.0)[:, 3], atol=1e-5)


def test_vit_drop_path_rates_and_the_momentum_target_without_them():
    from keras_ssl.engine import momentum_target
    from keras_ssl.keras_compat import seed_generators

    linear = vit(image_size=16, patch_size=4, dim=16, depth=4, heads=2, drop_path=0.3)
    # The official codes' `[x.item() for x in torch.linspace(0, drop_path_rate, depth)]`.
    np.testing.assert_allclose([b.drop_path for b in linear.blocks], [0.0, 0.1, 0.2, 0.3], atol=1e-7)
    uniform = vit(16, 4, 16, 4, 2, drop_path=0.3, drop_path_uniform=True)
    assert [b.drop_path for b in uniform.blocks] == [0.3] * 4
    assert len(seed_generators(linear)) == 3  # the blocks that drop: their coins resume with a checkpoint
    assert seed_generators(vit(16, 4, 16, 4, 2)) == []
    loaded = ViT.from_config(uniform.get_config())
    assert [b.drop_path for b in loaded.blocks] == [0.3] * 4
    # DINO's, iBOT's and DINOv2's teachers are built without drop_path_rate.
    teacher = momentum_target(uniform)
    assert [b.drop_path for b in teacher.blocks] == [0.0] * 4 and uniform.blocks[0].drop_path == 0.3
    x = images(8)
    np.testing.assert_allclose(
        ops.convert_to_numpy(teacher(x, training=True)), ops.convert_to_numpy(teacher(x)), atol=1e-5
    )
    assert not np.allclose(ops.convert_to_numpy(uniform(x, training=True)), ops.convert_to_numpy(uniform(x)))
    with pytest.raises(ValueError, match=r"`drop_path` must be in \[0, 1\), got 1.0"):
        vit(16, 4, 16, 1, 2, drop_path=1.0)


def test_pixel_norm_standardises_what_the_patch_embedding_sees(tmp_path):
    # torchvision's `transforms.Normalize` with ImageNet's statistics, as the official codes feed their ViTs.
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    plain = vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2)
    normed = vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, pixel_norm="imagenet")
    normed.set_weights(plain.get_weights())
    x = images()
    expected = ops.convert_to_numpy(plain(((x - mean) / std).astype("float32")))
    np.testing.assert_allclose(ops.convert_to_numpy(normed(x)), expected, atol=1e-5)
    # The token path (MAE, iBOT, I-JEPA) standardises too.
    np.testing.assert_allclose(
        ops.convert_to_numpy(normed.encode_tokens(normed.embed_patches(x))[:, 0]), expected, atol=1e-5
    )
    custom = vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, pixel_norm=((0.5, 0.5, 0.5), (0.25,) * 3))
    custom.set_weights(plain.get_weights())
    path = str(tmp_path / "vit.keras")
    custom.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config()["pixel_norm"] == [[0.5] * 3, [0.25] * 3]
    np.testing.assert_allclose(
        ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(plain((x - 0.5) / 0.25)), atol=1e-5
    )
    for bad in ("cifar", ((0.5, 0.5), (0.2, 0.2)), ((0.5,) * 3, (0.2, 0.0, 0.2))):
        with pytest.raises(ValueError, match="`pixel_norm`: None, 'imagenet' or \\(3 means, 3 stds > 0\\)"):
            vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, pixel_norm=bad)


def test_imagenet_pixel_norm_on_grey_images_takes_the_channels_averages():
    plain = vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, channels=1)
    grey = vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, channels=1, pixel_norm="imagenet")
    grey.set_weights(plain.get_weights())
    x = images()[..., :1]
    expected = plain(((x - (0.485 + 0.456 + 0.406) / 3) / ((0.229 + 0.224 + 0.225) / 3)).astype("float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(grey(x)), ops.convert_to_numpy(expected), atol=1e-5)
    with pytest.raises(ValueError, match="2 means, 2 stds"):
        vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, channels=2, pixel_norm="imagenet")
