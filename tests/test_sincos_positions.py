"""MAE's and I-JEPA's fixed 2D sine-cosine positions: the ViT option, MAE's decoder, the CLI's choice."""

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


def test_the_cli_builds_mae_and_ijepa_vits_with_sincos_positions(monkeypatch):
    from keras_ssl.cli.building import _build_encoder

    asked = {}
    monkeypatch.setattr(backbones, "get", lambda name, shape, **kwargs: asked.update(kwargs))
    built = {}
    for name, method in METHODS.items():
        if method.token_encoder or name == "dino":
            _build_encoder("vit_tiny", (16, 16, 3), 1.0, 16, tokens=method.token_encoder, method=method)
            built[name] = asked["vit_positions"]
    monkeypatch.undo()
    # models_mae.py and I-JEPA's vision_transformer.py fix their positions; DINO's, iBOT's, DINOv2's
    # and MSN's ViTs learn theirs; SimMIM's (BEiT's relative bias) is ours learned (docs/methods.md).
    assert built == {name: "sincos" if name in ("mae", "ijepa") else "learned" for name in built}
    assert {"mae", "ijepa", "dino", "ibot", "dinov2", "msn", "simmim"} <= set(built)
    encoder = backbones.get("vit_tiny", (16, 16, 3), vit_positions="sincos")
    assert encoder.get_config()["positions"] == "sincos"
    assert backbones.get("vit_tiny", (16, 16, 3)).get_config()["positions"] == "learned"


def test_bad_position_options_are_refused():
    with pytest.raises(ValueError, match="`positions` must be 'learned' or 'sincos', got 'rope'"):
        vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2, positions="rope")
    with pytest.raises(ValueError, match="sine-cosine positions need `dim` divisible by 4, got 18"):
        vit(image_size=16, patch_size=4, dim=18, depth=1, heads=2, positions="sincos")
    with pytest.raises(ValueError, match="square patch grid, got 12 patches"):
        MAEDecoder(12, 48, dim=8, positions="sincos")
    with pytest.raises(ValueError, match="`positions` must be"):
        ClassTokenPositionEmbedding(positions="fixed")
