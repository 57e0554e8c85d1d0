"""Each method as its paper defines it, checked against independent references.

Every expected value here is written from the paper or its official code
(NumPy re-implementations of their equations, or their published settings),
never derived from keras_ssl, so each test could catch a departure.
"""

import math

import keras
import numpy as np
import pytest
from conftest import small_encoder
from test_methods import MAKERS

import keras_ssl
from keras_ssl import losses
from keras_ssl.layers import (
    ColorJitter,
    GaussianBlur,
    MultiCrop,
    PredictionHead,
    ProjectionHead,
    RandomApply,
    RandomResizedCrop,
)


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float64")


def _normalize(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ----------------------------------------------------------------- MoCo v2
def moco_v2_reference(q, k, queue, t):
    """moco/builder.py: logits = [q.k+, q.queue] / T, labels 0 (positive first)."""
    q, k, queue = _normalize(q), _normalize(k), _normalize(queue)
    l_pos = np.einsum("nc,nc->n", q, k)[:, None]
    l_neg = q @ queue.T
    logits = np.concatenate([l_pos, l_neg], axis=1) / t
    logits -= logits.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[:, 0]))


def test_moco_v2_contrasts_the_positive_with_the_queue_only():
    rng = np.random.default_rng(0)
    q, k, queue = rng.normal(size=(6, 8)), rng.normal(size=(6, 8)), rng.normal(size=(20, 8))
    want = moco_v2_reference(q, k, queue, 0.2)
    got = losses.info_nce(
        q.astype("float32"), k.astype("float32"), 0.2, negatives=queue.astype("float32"), in_batch_negatives=False
    )
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    model = keras_ssl.MoCoV2(small_encoder(), queue_size=20, projection_dim=8)
    model.queue.queue.assign(queue.astype("float32"))  # the loss reads the negatives from the model's queue
    loss, _ = model.compute_ssl_loss({"z1": q.astype("float32"), "k2": k.astype("float32")})
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    # With the other keys of the batch as extra negatives the value differs.
    with_batch = losses.info_nce(q.astype("float32"), k.astype("float32"), 0.2, negatives=queue.astype("float32"))
    assert abs(float(with_batch) - want) > 1e-3


# ------------------------------------------------------- RandomResizedCrop
def torchvision_boxes(n, height, width, scale, ratio, rng):
    """torchvision.transforms.RandomResizedCrop.get_params, n times."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    boxes = []
    for _ in range(n):
        for _ in range(10):
            target_area = area * rng.uniform(scale[0], scale[1])
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                boxes.append((h, w))
                break
        else:
            in_ratio = width / height
            if in_ratio < min(ratio):
                w = width
                h = int(round(w / min(ratio)))
            elif in_ratio > max(ratio):
                h = height
                w = int(round(h * max(ratio)))
            else:
                w, h = width, height
            boxes.append((h, w))
    return np.array(boxes, dtype="float64")


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.2, 1.0)])
def test_crop_sizes_follow_torchvision_sampler(scale):
    n, side = 10000, 32
    want = torchvision_boxes(n, side, side, scale, (3 / 4, 4 / 3), np.random.default_rng(0))
    layer = RandomResizedCrop(side, scale=scale, seed=0)
    top, left, h, w = (_np(t) for t in layer.sample_boxes(n, side, side))
    assert np.all(h >= 1) and np.all(h <= side) and np.all(w >= 1) and np.all(w <= side)
    assert np.all(top >= 0) and np.all(top + h <= side) and np.all(left + w <= side)
    np.testing.assert_array_equal(h, np.round(h))  # integer boxes, as torchvision's
    quantiles = [0.1, 0.25, 0.5, 0.75, 0.9]
    area_got = np.quantile(h * w / side**2, quantiles)
    area_want = np.quantile(want[:, 0] * want[:, 1] / side**2, quantiles)
    np.testing.assert_allclose(area_got, area_want, atol=0.025)
    assert abs((h * w).mean() - (want[:, 0] * want[:, 1]).mean()) / side**2 < 0.01
    ratio_got = np.quantile(np.log(w / h), quantiles)
    ratio_want = np.quantile(np.log(want[:, 1] / want[:, 0]), quantiles)
    np.testing.assert_allclose(ratio_got, ratio_want, atol=0.04)


def test_crop_offsets_are_uniform_over_the_valid_positions():
    layer = RandomResizedCrop(32, scale=(0.25, 0.25), ratio=(1.0, 1.0), seed=1)
    top, left, h, w = (_np(t) for t in layer.sample_boxes(4000, 32, 32))
    np.testing.assert_array_equal(h, 16.0)  # sqrt(0.25 * 32 * 32)
    # torchvision: top = randint(0, H - h + 1): 17 positions, each ~1/17
    counts = np.bincount(top.astype(int), minlength=17)
    assert counts.size == 17 and counts.min() > 4000 / 17 * 0.7


# ------------------------------------------------------------ BatchNorm
def bn_reference(x, gamma, beta, eps=1e-5):
    """torch.nn.BatchNorm1d in training mode (biased batch variance, eps 1e-5)."""
    mean, var = x.mean(axis=0), x.var(axis=0)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def test_head_batchnorm_uses_pytorch_epsilon_and_momentum():
    rng = np.random.default_rng(1)
    x = (1e-2 * rng.normal(size=(16, 6))).astype("float32")  # small variance: eps matters
    head = ProjectionHead(hidden_dim=5, output_dim=3, num_layers=2)
    head.build((None, 6))
    dense1, bn, _, dense2 = head.blocks
    out = _np(head(x, training=True))
    hidden = np.maximum(bn_reference(x @ _np(dense1.kernel), _np(bn.gamma), _np(bn.beta)), 0.0)
    np.testing.assert_allclose(out, hidden @ _np(dense2.kernel) + _np(dense2.bias), rtol=1e-4, atol=1e-5)
    # PyTorch's momentum 0.1: running = 0.9 running + 0.1 batch statistic.
    np.testing.assert_allclose(_np(bn.moving_mean), 0.1 * (x @ _np(dense1.kernel)).mean(0), atol=1e-6)


def _output_is_batch_normalised(head, width):
    x = np.random.default_rng(2).normal(size=(32, width)).astype("float32")
    z = _np(head(x, training=True))
    return np.abs(z.mean(0)).max() < 1e-4 and np.allclose(z.var(0), 1.0, atol=1e-2)


@pytest.mark.parametrize("version", [1, 2])
def test_simclr_projector_batch_normalises_its_output(version):
    # SimCLR's official code: the projector's last linear layer has no bias
    # and is followed by BatchNorm.
    # Glorot kernels: SimCLR's own RandomNormal(0.01) leaves a pre-BN variance near BN's epsilon here,
    # and the output's variance v / (v + eps) visibly below 1.
    model = keras_ssl.SimCLR(small_encoder(), version=version, projection_dim=8, head_initializer="keras")
    dense = [b for b in model.projector.blocks if isinstance(b, keras.layers.Dense)]
    assert len(dense) == (2 if version == 1 else 3) and not dense[-1].use_bias
    assert _output_is_batch_normalised(model.projector, model.feature_dim)


def test_nnclr_projector_batch_normalises_all_three_layers():
    model = keras_ssl.NNCLR(small_encoder(), queue_size=16, projection_dim=8, hidden_dim=16)
    kinds = [type(b).__name__ for b in model.projector.blocks]
    assert kinds.count("Dense") == 3 and kinds.count("BatchNormalization") == 3
    assert _output_is_batch_normalised(model.projector, model.feature_dim)


def test_moco_v3_heads_follow_the_official_code():
    # moco-v3/moco/builder.py: ResNet projector _build_mlp(2, ...) with a
    # non-affine last BN, ViT projector 3 layers; Linear layers without bias;
    # predictor _build_mlp(2, ..., last_bn=False) also without bias; MoCo_ViT's predictor
    # _build_mlp(2, dim, mlp_dim, dim) keeps the non-affine last BN (builder.py L122).
    resnet = keras_ssl.MoCoV3(small_encoder(), projection_dim=8, hidden_dim=16)
    dense = [b for b in resnet.projector.blocks if isinstance(b, keras.layers.Dense)]
    assert len(dense) == 2 and not any(d.use_bias for d in dense)
    assert _output_is_batch_normalised(resnet.projector, resnet.feature_dim)
    predictor = [b for b in resnet.predictor.blocks if isinstance(b, keras.layers.Dense)]
    assert len(predictor) == 2 and not any(d.use_bias for d in predictor)
    vit = keras_ssl.MoCoV3(keras_ssl.backbones.vit_tiny(image_size=16, patch_size=8), projection_dim=8, hidden_dim=16)
    assert sum(isinstance(b, keras.layers.Dense) for b in vit.projector.blocks) == 3
    assert not _output_is_batch_normalised(resnet.predictor, resnet.projection_dim)
    vit_predictor = [b for b in vit.predictor.blocks if isinstance(b, keras.layers.Dense)]
    assert len(vit_predictor) == 2 and not any(d.use_bias for d in vit_predictor)
    assert _output_is_batch_normalised(vit.predictor, vit.projection_dim)


# The official codes' forwards: which views one encoder call and one projector call (one set of
# BatchNorm statistics each) span.
OFFICIAL_ENCODER_CALLS = {
    "byol": "view",  # byol_experiment.py: forward(inputs['view1']), then forward(inputs['view2'])
    "simsiam": "view",  # builder.py: z1 = self.encoder(x1); z2 = self.encoder(x2)
    "barlow_twins": "view",  # main.py: self.projector(self.backbone(y1)), then y2
    "vicreg": "view",  # main_vicreg.py: self.projector(self.backbone(x)), then y
    # tf2/model.py: tf.concat(features_list, 0), then one resnet call and one _projection_head call
    "simclr": "both",
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_ENCODER_CALLS))
def test_the_encoder_and_projector_normalise_over_the_views_the_official_code_runs_together(name):
    model = MAKERS[name]()
    encoder = model.encoder
    rng = np.random.default_rng(0)
    views = [rng.random((8, 16, 16, 3)).astype("float32"), rng.random((8, 16, 16, 3)).astype("float32") * 0.5]
    out = model.ssl_forward([keras.ops.convert_to_tensor(v) for v in views], training=True)

    apart = [_np(model.projector(encoder(v, training=True), training=True)) for v in views]
    z = model.projector(encoder(np.concatenate(views), training=True), training=True)
    together = [_np(half) for half in keras.ops.split(z, 2)]
    assert not np.allclose(apart[0], together[0], atol=1e-3)  # the two batchings differ here
    expected = apart if OFFICIAL_ENCODER_CALLS[name] == "view" else together
    np.testing.assert_allclose(_np(out["z1"]), expected[0], atol=1e-4)
    np.testing.assert_allclose(_np(out["z2"]), expected[1], atol=1e-4)


def test_prediction_head_keeps_a_bias_by_default():
    # BYOL's and SimSiam's predictors end in a biased linear layer.
    head = PredictionHead(4, 8)
    assert [b for b in head.blocks if isinstance(b, keras.layers.Dense)][-1].use_bias


# --------------------------------------------------------------------- MAE
def test_mae_norm_pix_loss_uses_the_unbiased_patch_variance():
    # mae/models_mae.py forward_loss: var = target.var(dim=-1) (unbiased),
    # target = (target - mean) / (var + 1e-6) ** .5; loss on masked patches.
    rng = np.random.default_rng(3)
    target, pred = rng.random((2, 5, 4)), rng.normal(size=(2, 5, 4))
    mask = (rng.random((2, 5)) < 0.6).astype("float64")
    mean, var = target.mean(-1, keepdims=True), target.var(-1, ddof=1, keepdims=True)
    normed = (target - mean) / np.sqrt(var + 1e-6)
    want = (((pred - normed) ** 2).mean(-1) * mask).sum() / mask.sum()
    got = losses.mae_reconstruction(
        target.astype("float32"), pred.astype("float32"), mask.astype("float32"), normalize=True
    )
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


# -------------------------------------------------------------------- DINO
def _rates(pipeline, layer_type):
    return [a.rate for a in pipeline.layers if isinstance(a, RandomApply) and isinstance(a.layer, layer_type)]


def test_dino_views_are_dinos_recipe():
    # DINO's main_dino.py DataAugmentationDINO: global crops (0.4, 1), local
    # (0.05, 0.4); blur p 1.0 / 0.1 on the global crops and 0.5 on local ones;
    # solarisation p 0.2 on the second global crop only.
    views = keras_ssl.DINO.default_views(96, seed=0)
    assert isinstance(views, MultiCrop)
    assert views.global_scale == (0.4, 1.0) and views.local_scale == (0.05, 0.4)
    blur = [_rates(c, GaussianBlur) for c in views.crops]
    solarize = [_rates(c, keras_ssl.views.Solarize) for c in views.crops]
    assert blur == [[1.0], [0.1]] + [[0.5]] * views.num_local
    assert solarize == [[], [0.2]] + [[]] * views.num_local


def test_dino_freezes_the_last_layer_for_the_first_steps():
    model = keras_ssl.DINO(
        small_encoder((None, None, 3)),
        input_shape=(16, 16, 3),
        output_dim=16,
        hidden_dim=8,
        bottleneck_dim=4,
        freeze_last_layer_steps=2,
        seed=0,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = np.random.default_rng(4).integers(0, 256, (8, 16, 16, 3)).astype("uint8")
    start = _np(model.head.last_v)
    model.fit(x, batch_size=4, epochs=1, verbose=0)  # steps 0 and 1: frozen
    np.testing.assert_array_equal(_np(model.head.last_v), start)
    mlp_moved = _np(model.head.mlp[0].kernel)
    model.fit(x, batch_size=4, epochs=1, verbose=0)  # steps 2 and 3: free
    assert np.abs(_np(model.head.last_v) - start).max() > 1e-6
    assert np.abs(_np(model.head.mlp[0].kernel) - mlp_moved).max() > 1e-6


# ------------------------------------------------- ImageNet-size recipes
def _pipelines(views):
    return views.crops if isinstance(views, MultiCrop) else views._pipelines()


def _jitter(pipeline):
    [jitter] = [a.layer for a in pipeline.layers if isinstance(a, RandomApply) and isinstance(a.layer, ColorJitter)]
    return (jitter.brightness[1] - 1, jitter.contrast[1] - 1, jitter.saturation[1] - 1, jitter.hue[1])


def _blur_kernels(pipeline):
    return [
        a.layer.kernel_size for a in pipeline.layers if isinstance(a, RandomApply) and isinstance(a.layer, GaussianBlur)
    ]


# The papers' ImageNet pipelines (torchvision arguments in their official code):
# SimCLR: jitter 0.8 s with s = 1, blur p 0.5; MoCo v2 / SimSiam: jitter
# (0.4, 0.4, 0.4, 0.1), blur p 0.5; BYOL, Barlow Twins, VICReg, NNCLR: jitter
# (0.4, 0.4, 0.2, 0.1), blur 1.0 / 0.1, solarisation 0 / 0.2; DINO: BYOL's jitter.
# Blur kernels are ~10 % of the side (23 px at 224).
RECIPES = {
    "SimCLR": ((0.8, 0.8, 0.8, 0.2), [0.5, 0.5], [0.0, 0.0]),
    "MoCoV2": ((0.4, 0.4, 0.4, 0.1), [0.5, 0.5], [0.0, 0.0]),
    "SimSiam": ((0.4, 0.4, 0.4, 0.1), [0.5, 0.5], [0.0, 0.0]),
    "BYOL": ((0.4, 0.4, 0.2, 0.1), [1.0, 0.1], [0.0, 0.2]),
    "BarlowTwins": ((0.4, 0.4, 0.2, 0.1), [1.0, 0.1], [0.0, 0.2]),
    "VICReg": ((0.4, 0.4, 0.2, 0.1), [1.0, 0.1], [0.0, 0.2]),
    "NNCLR": ((0.4, 0.4, 0.2, 0.1), [1.0, 0.1], [0.0, 0.2]),
    "DINO": ((0.4, 0.4, 0.2, 0.1), [1.0, 0.1], [0.0, 0.2]),
}


@pytest.mark.parametrize("size, kernel", [(224, 23), (96, 9)])
@pytest.mark.parametrize("name", RECIPES)
def test_imagenet_size_recipes_are_the_papers(name, size, kernel):
    jitter, blur, solarize = RECIPES[name]
    views = getattr(keras_ssl, name).default_views(size, seed=0)
    pipelines = _pipelines(views)[:2]
    for pipeline, blur_rate, solarize_rate in zip(pipelines, blur, solarize):
        np.testing.assert_allclose(_jitter(pipeline), jitter)
        assert _rates(pipeline, GaussianBlur) == ([blur_rate] if blur_rate else [])
        assert _blur_kernels(pipeline) == ([kernel] if blur_rate else [])
        assert _rates(pipeline, keras_ssl.views.Solarize) == ([solarize_rate] if solarize_rate else [])


def test_cifar_size_recipes_have_no_blur():
    for name in RECIPES:
        for pipeline in _pipelines(getattr(keras_ssl, name).default_views(32, seed=0)):
            assert _rates(pipeline, GaussianBlur) == []


def _blur_reference(image, sigma, kernel):
    # torchvision.transforms.functional.gaussian_blur: separable kernel
    # exp(-x^2 / 2 sigma^2) normalised, reflect padding.
    radius = kernel // 2
    x = np.arange(-radius, radius + 1)
    k = np.exp(-(x**2) / (2 * sigma**2))
    k /= k.sum()
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(k[i] * padded[i : i + image.shape[0]] for i in range(kernel))
    return sum(k[i] * rows[:, i : i + image.shape[1]] for i in range(kernel))


def test_gaussian_blur_matches_torchvisions_and_draws_sigma_per_image():
    rng = np.random.default_rng(0)
    image = rng.random((12, 10, 3)).astype("float32")
    for sigma in (0.3, 1.7):
        got = GaussianBlur(5, sigma=(sigma, sigma), seed=0)(image[None], training=True)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got)[0], _blur_reference(image, sigma, 5), atol=1e-5)
    same = np.repeat(image[None], 8, axis=0)
    out = keras.ops.convert_to_numpy(GaussianBlur(5, seed=1)(same, training=True))
    spread = [float(np.abs(o - out[0]).max()) for o in out[1:]]
    assert min(spread) > 1e-4  # every image its own sigma (Keras's layer: one per batch)
