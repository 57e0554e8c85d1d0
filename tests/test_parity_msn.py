"""The parity benchmark's PyTorch MSN reference (benchmarks/torch_vit.py), from facebookresearch/msn.

Given keras_ssl's weights (anchor and target, moved off their init), views and dropped patches, the
reference computes keras_ssl's MSN loss; the reference's loss equals a NumPy computation of the
paper's from its definition; and the one difference found (per-image against per-batch patch drop)
is shown by value. Stochastic depth is off so both sides are deterministic. Run once, in the torch
backend's run of the suite.
"""

import os
import sys

import keras
import numpy as np
import pytest

if keras.backend.backend() != "torch":
    pytest.skip("the PyTorch reference is checked once, in the torch backend's run", allow_module_level=True)
torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import torch_vit

import keras_ssl

SIZES = dict(image_size=16, patch_size=4, dim=32, depth=2, heads=2)
HEAD = dict(num_prototypes=12, hidden_dim=16, output_dim=8)


@pytest.fixture(autouse=True)
def one_thread():
    # Small models: one thread is as fast, and leaves the other cores alone.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _msn(**kwargs):
    vit = keras_ssl.backbones.vit(**SIZES, **keras_ssl.MSN.vit_options)
    views = keras_ssl.views.msn_views(16, local_size=8, num_local=2)
    return keras_ssl.MSN(vit, **{**HEAD, **kwargs}, views=views, seed=0)


def _perturb(variables, rng):
    for w in variables:
        if "float" in str(w.dtype) and "moving" not in w.path:
            w.assign(keras.ops.convert_to_numpy(w) + rng.normal(0.0, 0.1, tuple(w.shape)).astype("float32"))


def _perturbed(model, seed):
    """Anchor weights and, differently, the target's moved off their init (the target no copy of the anchor)."""
    rng = np.random.default_rng(seed)
    _perturb(model.trainable_weights, rng)
    _perturb(model.target_encoder.weights + model.target_head.weights, rng)
    return model


def _views(seed, batch=4):
    """Target and anchor crops (16 px), two focal crops (8 px), NHWC in [0, 1]."""
    rng = np.random.default_rng(seed)
    sizes = (16, 16, 8, 8)
    return [rng.uniform(size=(batch, s, s, 3)).astype("float32") for s in sizes]


def _nchw(images):
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _keras_step(model, views):
    """keras_ssl's own forward and loss on `views`, and the patch subsets its `patch_dropper` drew."""
    object.__setattr__(model, "views", lambda x, training=True: [keras.ops.convert_to_tensor(v) for v in views])
    dropper, drawn = model.patch_dropper, {}

    def recording(tokens):
        out = dropper(tokens)
        drawn["ids_restore"] = keras.ops.convert_to_numpy(out[2])
        return out

    object.__setattr__(model, "patch_dropper", recording)
    outputs = model.ssl_forward(model.views(None), training=True)
    loss, terms = model.compute_ssl_loss(outputs)
    object.__setattr__(model, "patch_dropper", dropper)
    # random_masking keeps ids_shuffle[:, :keep], in that order; ids_shuffle = argsort(ids_restore).
    keep = np.argsort(drawn["ids_restore"], axis=1)[:, : model.num_kept]
    return float(keras.ops.convert_to_numpy(loss)), terms, keep


def _reference(model, **kwargs):
    vit = torch_vit.ViT.like(model.encoder)
    ref = torch_vit.MSN(vit, **{**HEAD, **kwargs})
    torch_vit.msn_from_keras(ref, model)
    return ref.train()  # the official trains both encoders in train mode: BN on batch statistics


@pytest.mark.parametrize(
    "options", [{}, {"label_smoothing": 0.1, "sinkhorn_iterations": 0, "patch_drop": 0.3, "me_max_weight": 0.5}]
)
def test_reference_computes_keras_ssl_msn_loss(options):
    model = _perturbed(_msn(**options), seed=1)
    views = _views(2)
    loss, terms, keep = _keras_step(model, views)
    ref = _reference(model, **options)
    assert ref.num_kept(16) == model.num_kept
    with torch.no_grad():
        out = ref([_nchw(v) for v in views], keep=torch.from_numpy(keep))
    assert float(out["cross_entropy"]) == pytest.approx(
        float(keras.ops.convert_to_numpy(terms["cross_entropy"])), rel=1e-5
    )
    assert float(out["me_max"]) == pytest.approx(float(keras.ops.convert_to_numpy(terms["me_max"])), rel=1e-4, abs=1e-6)
    assert float(out["loss"]) == pytest.approx(loss, rel=1e-5)


def _numpy_msn(anchors, target, prototypes, tau=0.1, T=0.25, iterations=3, smoothing=0.0, weight=1.0):
    """The paper's loss from its definition (Assran et al. 2022, eqs. 1-4), in float64."""
    anchors, target, prototypes = (np.asarray(a, np.float64) for a in (anchors, target, prototypes))
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    k = len(prototypes)

    def p(z):
        s = unit(z) @ unit(prototypes).T / tau
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return (1 - smoothing) * e / e.sum(axis=1, keepdims=True) + smoothing / k

    t = p(target) ** (1 / T)
    t /= t.sum(axis=1, keepdims=True)
    if iterations:
        q = t / t.sum()
        for _ in range(iterations):
            q = q / q.sum(axis=0, keepdims=True) / k  # each prototype's mass 1 / K
            q = q / q.sum(axis=1, keepdims=True) / len(q)  # each sample's 1 / B
        t = q * len(q)
    t = np.tile(t, (len(anchors) // len(target), 1))
    pa = p(anchors)
    ce = np.mean(-np.sum(t * np.log(pa), axis=1))
    mean = pa.mean(axis=0)
    me_max = np.sum(mean * np.log(mean)) + np.log(k)
    return ce + weight * me_max, ce, me_max


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2, "sinkhorn_iterations": 0, "me_max_weight": 2.0}])
def test_reference_loss_is_the_papers(options):
    torch.manual_seed(0)
    vit = torch_vit.ViT(**SIZES, pixel_norm="imagenet")
    ref = torch_vit.MSN(vit, **HEAD, **options).train()
    views = [_nchw(v) for v in _views(3)]
    with torch.no_grad():
        out = ref(views)  # the official's own draw: one subset for the batch
    expected = _numpy_msn(
        out["anchors"].numpy(),
        out["target"].numpy(),
        ref.prototypes.detach().numpy(),
        iterations=ref.sinkhorn_iterations,
        smoothing=options.get("label_smoothing", 0.0),
        weight=ref.me_max_weight,
    )
    assert out["anchors"].shape == (3 * 4, 8)  # the masked anchor and two focal crops, view-major
    assert [float(out[k]) for k in ("loss", "cross_entropy", "me_max")] == pytest.approx(expected, rel=1e-5)


def test_patch_drop_per_image_against_per_batch():
    """The one difference: keras_ssl drops a subset per image, the official one subset per batch."""
    model = _perturbed(_msn(), seed=4)
    views = _views(5, batch=8)
    loss, _, keep = _keras_step(model, views)
    subsets = {tuple(sorted(row)) for row in keep}
    assert model.num_kept == 13 and len(subsets) > 1  # the official: exactly 1
    ref = _reference(model)
    with torch.no_grad():
        official = ref([_nchw(v) for v in views], keep=torch.from_numpy(keep[0]))  # image 0's subset for all
        same = ref([_nchw(v) for v in views], keep=torch.from_numpy(keep))
    assert float(same["loss"]) == pytest.approx(loss, rel=1e-5)
    assert abs(float(official["loss"]) - loss) > 1e-4  # a different objective by value, not only a different draw
