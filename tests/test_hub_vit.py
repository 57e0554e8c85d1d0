"""HubViT: keras-hub's ViT and DINOv2 backbones as token encoders, checked against keras-hub's own forward."""

import json
import zipfile

import keras
import numpy as np
import pytest
from conftest import random_images
from keras import ops

keras_hub = pytest.importorskip("keras_hub")

import keras_ssl
from keras_ssl.backbones import clone_model, from_keras_hub
from keras_ssl.backbones.hub_vit import HubViT

DIM, REGISTERS = 16, 2


def np_(x):
    return ops.convert_to_numpy(x)


def images(n=2, size=16, seed=0):
    return np.random.default_rng(seed).random((n, size, size, 3)).astype("float32")


def hub_vit(**kwargs):
    return keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=1, num_heads=2, hidden_dim=DIM, mlp_dim=32, **kwargs
    )


def hub_dinov2(size=16, positions=16, registers=REGISTERS):
    return keras_hub.models.DINOV2Backbone(
        patch_size=4,
        num_layers=1,
        hidden_dim=DIM,
        num_heads=2,
        intermediate_dim=32,
        layer_scale_init_value=0.5,
        num_register_tokens=registers,
        image_shape=(size, size, 3),
        position_embedding_shape=(positions, positions, 3),
    )


def make(kind, **kwargs):
    return hub_vit(**kwargs) if kind == "vit" else hub_dinov2(**kwargs)


def perturb(backbone, skip=(), seed=1):
    """Every variable moved off its initial value (zero registers or biases would hide mistakes)."""
    rng = np.random.default_rng(seed)
    for v in backbone.weights:
        if not any(s in v.path for s in skip):
            v.assign(np_(v) + rng.normal(0, 0.2, tuple(v.shape)).astype("float32"))
    return backbone


def hub_forward(backbone, x):
    """keras-hub's own forward, registers dropped: the reference."""
    out = np_(backbone({"images": x}) if isinstance(backbone, keras_hub.models.DINOV2Backbone) else backbone(x))
    registers = getattr(backbone, "num_register_tokens", 0)
    return np.concatenate([out[:, :1], out[:, 1 + registers :]], axis=1)


def tokens_of(encoder, x, **kwargs):
    return np_(encoder.encode_tokens(encoder.embed_patches(x, **kwargs)))


@pytest.mark.parametrize("kind", ["vit", "dinov2"])
def test_forward_equals_keras_hubs_own(kind):
    # DINOv2's positions made for 32 px: keras-hub resizes them to 16 px itself, and so must we use its table.
    backbone = perturb(make(kind) if kind == "vit" else hub_dinov2(positions=32))
    encoder = HubViT(backbone)
    x = images(2)
    expected = hub_forward(backbone, x)
    np.testing.assert_allclose(tokens_of(encoder, x), expected, atol=1e-5)
    np.testing.assert_allclose(np_(encoder(x)), expected[:, 0], atol=1e-5)
    assert (encoder.patch_size, encoder.dim, encoder.grid_size, encoder.num_patches) == (4, DIM, 4, 16)


def test_dinov2_crops_get_keras_hubs_position_interpolation(tmp_path):
    # keras-hub's own DINOv2 at 8 px, from the same weights, resizes the 16 px positions itself.
    big = perturb(hub_dinov2(), skip=("position_embeddings",))
    big.save_weights(str(tmp_path / "big.weights.h5"))
    small = hub_dinov2(size=8)
    small.load_weights(str(tmp_path / "big.weights.h5"))  # keras-hub re-derives the 8 px table on load
    crops = images(2, size=8)
    np.testing.assert_allclose(tokens_of(HubViT(big), crops), hub_forward(small, crops), atol=1e-5)


@pytest.mark.parametrize("kind", ["vit", "dinov2"])
def test_masked_patches_get_the_mask_token_and_their_pixels_do_not_count(kind):
    backbone = perturb(make(kind))
    encoder = HubViT(backbone)
    x = images(2)
    mask = np.zeros((2, 16), bool)
    mask[0, [0, 5, 6]] = mask[1, 15] = True
    token = np.random.default_rng(2).normal(size=DIM).astype("float32")
    embedded = np_(encoder.embed_patches(x, mask=mask, mask_token=token))
    if kind == "vit":  # by hand: keras-hub's table, position 0 is the class token's
        positions = np_(backbone.get_layer("vit_patching_and_embedding").position_embedding.embeddings)[1:]
        expected = np.where(mask[..., None], token + positions, np_(encoder.embed_patches(x)))
    else:  # keras-hub's DINOv2 embedding masks with its own mask token, before the positions too
        embedding = backbone.embeddings
        embedding.mask_token.assign(token[None])
        expected = np_(embedding(x, masks=mask))[:, 1 + REGISTERS :]
    np.testing.assert_allclose(embedded, expected, atol=1e-5)

    changed = x.copy()
    changed[0, 0:4, 0:4] = changed[0, 4:8, 4:12] = changed[1, 12:16, 12:16] = 1.0  # patches 0, 5, 6 and 15
    masked_out = tokens_of(encoder, x, mask=mask, mask_token=token)
    np.testing.assert_allclose(tokens_of(encoder, changed, mask=mask, mask_token=token), masked_out, atol=1e-6)
    assert not np.allclose(tokens_of(encoder, changed), tokens_of(encoder, x), atol=1e-3)  # unmasked, they count


@pytest.mark.parametrize("kind", ["vit", "dinov2"])
def test_attention_mask_keeps_the_other_tokens_out(kind):
    encoder = HubViT(perturb(make(kind)))
    tokens = np_(encoder.embed_patches(images(2)))
    keep = np.zeros((2, 16), bool)
    keep[0, :10] = keep[1, 3:7] = True
    out = np_(encoder.encode_tokens(tokens, attention_mask=keep))
    for b in range(2):
        # Reference: keras-hub's layers (no mask) on the kept tokens alone.
        alone = np_(encoder.encode_tokens(tokens[b : b + 1, keep[b]]))[0]
        np.testing.assert_allclose(out[b, 0], alone[0], atol=1e-5)
        np.testing.assert_allclose(out[b, 1:][keep[b]], alone[1:], atol=1e-5)
    noisy = np.where(keep[..., None], tokens, 5.0 * np.random.default_rng(3).normal(size=tokens.shape))
    out_noisy = np_(encoder.encode_tokens(noisy.astype("float32"), attention_mask=keep))
    np.testing.assert_allclose(out_noisy[:, 0], out[:, 0], atol=1e-5)
    np.testing.assert_allclose(out_noisy[:, 1:][keep], out[:, 1:][keep], atol=1e-5)


def _method(name, encoder):
    heads = dict(output_dim=32, hidden_dim=16, bottleneck_dim=8)
    if name == "ibot":
        return keras_ssl.IBOT(encoder, views=keras_ssl.views.ibot_views(16, num_local=0), **heads)
    if name == "dinov2":
        return keras_ssl.DINOv2(encoder, views=keras_ssl.views.dinov2_views(16, local_size=8, num_local=1), **heads)
    return keras_ssl.IJEPA(encoder, predictor_dim=16, predictor_depth=1, predictor_heads=2, num_targets=2)


@pytest.mark.parametrize("method", ["ibot", "dinov2", "ijepa"])
def test_methods_train_the_keras_hub_backbone_which_reloads_with_keras_hub_alone(method, tmp_path):
    backbone = hub_vit() if method == "ibot" else hub_dinov2()
    encoder = HubViT(backbone)
    before = {v.path: np_(v) for v in backbone.trainable_weights}
    model = _method(method, encoder)
    model.compile(optimizer=keras.optimizers.AdamW(1e-2))
    model.fit(random_images(8), epochs=1, batch_size=8, verbose=0)  # one step
    moved = [v.path for v in backbone.trainable_weights if not np.allclose(np_(v), before[v.path])]
    assert len(moved) > 0.8 * len(before), f"only {moved} of {sorted(before)} trained"

    trained = encoder.backbone
    assert trained is backbone
    path = str(tmp_path / "backbone.keras")
    trained.save(path)
    config = zipfile.ZipFile(path).read("config.json").decode()
    assert "keras_ssl" not in config and json.loads(config)["registered_name"].startswith("keras_hub>")
    loaded = keras.saving.load_model(path)
    x = images(2)
    assert type(loaded) is type(backbone)
    np.testing.assert_allclose(hub_forward(loaded, x), hub_forward(backbone, x), atol=1e-5)


def test_config_clone_file_and_preset_give_the_same_encoder(tmp_path):
    backbone = perturb(hub_dinov2())
    encoder = HubViT(backbone, pool="mean", scale=[0.02, 0.01, 0.03], offset=[-1.0, 0.0, 1.0])
    x = images(2)
    # The scaling is keras-hub's ImageConverter's: the backbone sees 255 * x * scale + offset.
    scaled = 255.0 * x * np.array([0.02, 0.01, 0.03], "float32") + np.array([-1.0, 0.0, 1.0], "float32")
    expected = hub_forward(backbone, scaled)[:, 1:].mean(axis=1)
    np.testing.assert_allclose(np_(encoder(x)), expected, atol=1e-5)

    copy = clone_model(encoder)  # how methods make their momentum targets
    assert copy.backbone is not backbone and isinstance(copy, HubViT)
    np.testing.assert_allclose(np_(copy(x)), expected, atol=1e-5)
    copy.backbone.weights[0].assign(np_(copy.backbone.weights[0]) + 1.0)
    np.testing.assert_allclose(np_(encoder(x)), expected, atol=1e-5)  # its own variables

    encoder.save(str(tmp_path / "encoder.keras"))
    np.testing.assert_allclose(np_(keras.saving.load_model(str(tmp_path / "encoder.keras"))(x)), expected, atol=1e-5)

    # keras-hub saves DINOv2's trained positions only when their signed change sums above epsilon (here
    # it does not: without the sync that `encoder.backbone` does, the preset keeps the old table).
    encoder.backbone.save_to_preset(str(tmp_path / "preset"))
    from_preset = from_keras_hub(str(tmp_path / "preset"), tokens=True, pooling="mean")
    np.testing.assert_allclose(np_(from_preset(scaled)), expected, atol=1e-5)


def test_dinov2_drop_path_drops_whole_branches_and_the_momentum_target_drops_none():
    from keras_ssl.engine import momentum_target
    from keras_ssl.keras_compat import seed_generators

    rate = 0.4
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=4, num_layers=1, hidden_dim=DIM, num_heads=2, intermediate_dim=32, layer_scale_init_value=0.5,
        image_shape=(8, 8, 3), position_embedding_shape=(8, 8, 3), drop_path_rate=rate,
    )  # fmt: skip
    perturb(backbone)
    encoder = HubViT(backbone, seed=3)
    x = images(1500, size=8)
    out = np_(encoder.tokens(x, training=True))
    # timm's DropPath (a coin per sample, as keras_ssl's ViT), from keras-hub's own layers: each sample's two
    # branches are each either dropped or scaled by 1 / keep.
    block, keep = backbone.encoder.layers[0], 1.0 - rate
    h0 = np_(backbone.embeddings(x))
    outcomes = []
    for s1 in (0.0, 1.0 / keep):
        h = h0 + s1 * np_(block.layer_scale1(block.attention(block.norm1(h0))))
        for s2 in (0.0, 1.0 / keep):
            outcomes.append(np_(backbone.layernorm(h + s2 * np_(block.layer_scale2(block.mlp(block.norm2(h)))))))
    errors = np.abs(np.stack(outcomes, axis=1) - out[:, None]).max(axis=(2, 3))  # (B, 4)
    assert errors.min(axis=1).max() < 1e-4  # every sample is one of the four outcomes
    picked = errors.argmin(axis=1)
    # Each branch kept with probability 0.6, independently (1500 samples: 3 sigma is 0.038).
    assert abs((picked >= 2).mean() - keep) < 0.04 and abs((picked % 2 == 1).mean() - keep) < 0.04
    np.testing.assert_allclose(np_(encoder.tokens(x[:4])), hub_forward(backbone, x[:4]), atol=1e-5)  # not training
    assert len(seed_generators(encoder)) == 1  # the coins resume with a checkpoint
    assert HubViT.from_config(encoder.get_config()).tokens.seed == 3

    # DINOv2's teacher is built without drop_path_rate.
    teacher = momentum_target(encoder)
    assert teacher.tokens.drop_path == 0.0 and encoder.tokens.drop_path == rate
    np.testing.assert_allclose(np_(teacher(x[:64], training=True)), np_(encoder(x[:64])), atol=1e-5)


def test_unsupported_backbones_are_refused_naming_what_is_needed():
    resnet = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64],
        stackwise_num_blocks=[1],
        stackwise_num_strides=[1],
        block_type="basic_block",
        image_shape=(16, 16, 3),
    )
    with pytest.raises(TypeError, match="needs a keras-hub ViTBackbone or DINOV2Backbone.*got ResNetBackbone"):
        HubViT(resnet)
    with pytest.raises(ValueError, match="use_class_token=True"):
        HubViT(hub_vit(use_class_token=False))
    with pytest.raises(ValueError, match="image_shape"):
        from_keras_hub(hub_vit(), input_shape=(32, 32, 3), tokens=True)


def test_get_gives_the_token_methods_a_hub_preset_as_a_token_encoder(tmp_path):
    backbone = perturb(hub_dinov2())
    backbone.save_to_preset(str(tmp_path / "preset"))  # no image converter: the backbone sees the [0, 1] images
    name = "hub:" + str(tmp_path / "preset")
    encoder = keras_ssl.backbones.get(name, (16, 16, 3), tokens=True)
    x = images(2)
    assert isinstance(encoder, HubViT)
    np.testing.assert_allclose(tokens_of(encoder, x), hub_forward(backbone, x), atol=1e-5)
    heads = dict(views=keras_ssl.views.ibot_views(16, num_local=0), output_dim=32, hidden_dim=16, bottleneck_dim=8)
    assert keras_ssl.IBOT(encoder, **heads).encoder is encoder
    pooled = keras_ssl.backbones.get(name, (16, 16, 3))  # what a pooled method gets: no patch tokens
    np.testing.assert_allclose(np_(pooled(x)), hub_forward(backbone, x)[:, 0], atol=1e-5)
    with pytest.raises(TypeError, match=r"IBOT works on patch tokens.*tokens=True.*got Functional"):
        keras_ssl.IBOT(pooled, **heads)
    with pytest.raises(ValueError, match="'resnet18' is no token encoder.*vit_tiny, vit_small or hub:"):
        keras_ssl.backbones.get("resnet18", (16, 16, 3), tokens=True)
