"""Tests of keras_ssl.losses against independent NumPy references and hand-worked values."""

import math

import keras
import numpy as np
import pytest
from conftest import grads
from hypothesis import given, settings
from hypothesis import strategies as st
from keras import ops

from keras_ssl import losses

RTOL, ATOL = 1e-5, 1e-6
B, D = 4, 8  # one shape for most tests: JAX compiles every eager op per shape


def rng(seed=0):
    return np.random.default_rng(seed)


def randn(*shape, seed=0):
    return rng(seed).standard_normal(shape).astype("float32")


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float64")


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np_(actual), expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- NumPy references (float64)


def ref_normalize(x):
    x = np.asarray(x, "float64")
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ref_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def ref_nt_xent(z1, z2, t):
    z = ref_normalize(np.concatenate([z1, z2]))
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        logits = np.array([z[i] @ z[j] / t for j in others])
        positive = z[i] @ z[(i + b) % n] / t
        total += np.log(np.exp(logits - logits.max()).sum()) + logits.max() - positive
    return total / n


def ref_info_nce(q, k, t, negatives=None):
    q, k = ref_normalize(q), ref_normalize(k)
    candidates = k if negatives is None else np.concatenate([k, ref_normalize(negatives)])
    log_prob = ref_log_softmax(q @ candidates.T / t)
    return -np.mean([log_prob[i, i] for i in range(len(q))])


def ref_cosines(p, z):
    return np.sum(ref_normalize(p) * ref_normalize(z), axis=1)


def ref_barlow_terms(z1, z2, lambd, eps=1e-5):
    def standardize(z):
        z = np.asarray(z, "float64")
        return (z - z.mean(0)) / np.sqrt(z.var(0) + eps)

    c = standardize(z1).T @ standardize(z2) / len(z1)
    on = np.sum((1 - np.diag(c)) ** 2)
    off = np.sum(c**2) - np.sum(np.diag(c) ** 2)
    return on, lambd * off


def ref_vicreg_terms(z1, z2, eps=1e-4):
    z1, z2 = np.asarray(z1, "float64"), np.asarray(z2, "float64")
    d = z1.shape[1]
    invariance = np.mean((z1 - z2) ** 2)
    variance = sum(np.mean(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + eps))) for z in (z1, z2)) / 2
    covariance = 0.0
    for z in (z1, z2):
        cov = np.cov(z, rowvar=False)  # unbiased
        covariance += (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / d
    return invariance, variance, covariance


def ref_sinkhorn(scores, eps, iterations):
    """SwAV's algorithm as written in its paper's code (prototypes x samples)."""
    s = np.asarray(scores, "float64") / eps
    q = np.exp(s - s.max()).T
    k, b = q.shape
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def ref_swav(scores, crops, t, eps, iterations, queues=None):
    scores = [np.asarray(s, "float64") for s in scores]
    total = 0.0
    for n, i in enumerate(crops):
        b = len(scores[i])
        joined = scores[i] if queues is None else np.concatenate([scores[i], queues[n]])
        q = ref_sinkhorn(joined, eps, iterations)[:b]
        others = [v for v in range(len(scores)) if v != i]
        total += np.mean([-np.mean(np.sum(q * ref_log_softmax(scores[v] / t), 1)) for v in others])
    return total / len(crops)


def ref_dino(student, teacher, center, ts, tt):
    terms = []
    for i, t in enumerate(teacher):
        p = np.exp(ref_log_softmax((np.asarray(t, "float64") - center) / tt))
        for v, s in enumerate(student):
            if v != i:
                terms.append(-np.mean(np.sum(p * ref_log_softmax(np.asarray(s, "float64") / ts), 1)))
    return np.mean(terms)


def ref_clip(img, txt, scale):
    logits = scale * ref_normalize(img) @ ref_normalize(txt).T
    i2t = -np.mean(np.diag(ref_log_softmax(logits)))
    t2i = -np.mean(np.diag(ref_log_softmax(logits.T)))
    return (i2t + t2i) / 2


def ref_mae(target, pred, mask, normalize, eps=1e-6):
    target, pred = np.asarray(target, "float64"), np.asarray(pred, "float64")
    if normalize:  # MAE's forward_loss: torch's var(dim=-1) is the unbiased variance
        target = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + eps)
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


# ---------------------------------------------------------------- NT-Xent / InfoNCE


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_reference(temperature):
    z1, z2 = randn(B, D, seed=1), randn(B, D, seed=2)
    close(losses.nt_xent(z1, z2, temperature), ref_nt_xent(z1, z2, temperature))


def test_nt_xent_hand_computed():
    # Views after L2 normalisation (temperature 1):
    #   a1 = (1, 0), b1 = (0, 1), a2 = (3, 4)/5 = (0.6, 0.8), b2 = (0, 2)/2 = (0, 1);
    #   positives a1<->a2 and b1<->b2.
    # Cosines: a1.b1 = 0, a1.a2 = 0.6, a1.b2 = 0, b1.a2 = 0.8, b1.b2 = 1, a2.b2 = 0.8.
    # -log softmax of the positive over the 3 other views of each anchor:
    #   a1: -0.6 + log(e^0 + e^0.6 + e^0)   = -0.6 + log(3.822119) = 0.740805
    #   b1: -1   + log(e^0 + e^0.8 + e^1)   = -1   + log(5.943823) = 0.782352
    #   a2: -0.6 + log(e^0.6 + e^0.8 + e^0.8) = -0.6 + log(6.273201) = 1.236287
    #   b2: -1   + log(e^0 + e^0.8 + e^1)   = 0.782352  (same cosines as b1)
    # mean = (0.740805 + 0.782352 + 1.236287 + 0.782352) / 4 = 0.885449
    z1 = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    z2 = np.array([[3.0, 4.0], [0.0, 2.0]], "float32")
    close(losses.nt_xent(z1, z2, 1.0), 0.8854491502541402)
    close(losses.nt_xent(z2, z1, 1.0), 0.8854491502541402)  # symmetric


def test_nt_xent_gradient_is_finite_despite_masked_diagonal():
    g1, g2 = grads(lambda a, b: losses.nt_xent(a, b, 0.1), randn(B, D, seed=3), randn(B, D, seed=4))
    assert np.all(np.isfinite(g1)) and np.all(np.isfinite(g2)) and np.abs(g1).sum() > 0


@pytest.mark.parametrize("with_negatives", [False, True])
def test_info_nce_matches_reference(with_negatives):
    q, k, neg = randn(B, D, seed=5), randn(B, D, seed=6), randn(B, D, seed=7)
    negatives = neg if with_negatives else None
    close(losses.info_nce(q, k, 0.2, negatives), ref_info_nce(q, k, 0.2, negatives))


# ---------------------------------------------------------------- SimSiam / BYOL


def test_negative_cosine_and_byol_match_reference():
    p, z = randn(B, D, seed=8), randn(B, D, seed=9)
    cos = ref_cosines(p, z)
    close(losses.negative_cosine(p, z), -cos.mean())
    close(losses.byol_loss(p, z), np.mean(2 - 2 * cos))
    close(losses.negative_cosine(p, 3 * p), -1.0)
    close(losses.byol_loss(p, -p), 4.0)


@pytest.mark.parametrize("loss", [losses.negative_cosine, losses.byol_loss])
def test_no_gradient_flows_into_the_target(loss):
    gp, gz = grads(loss, randn(B, D, seed=10), randn(B, D, seed=11))
    assert np.abs(gp).sum() > 0
    np.testing.assert_array_equal(gz, 0.0)


# ---------------------------------------------------------------- Barlow Twins


def test_barlow_twins_matches_reference():
    z1, z2 = randn(B, D, seed=12), 5 * randn(B, D, seed=13) + 3
    terms = losses.barlow_twins_terms(z1, z2, lambd=0.01)
    on, off = ref_barlow_terms(z1, z2, 0.01)
    close(terms["on_diagonal"], on)
    close(terms["off_diagonal"], off)
    close(losses.barlow_twins(z1, z2, lambd=0.01, scale=0.5), 0.5 * (on + off))


def test_barlow_twins_perfectly_correlated_views():
    z1 = randn(B, D, seed=14)
    # Each view is standardised separately, so an affine copy is perfectly correlated.
    terms = losses.barlow_twins_terms(z1, 10 * z1 - 7)
    assert float(np_(terms["on_diagonal"])) < 1e-6
    # Orthogonal, zero-mean +-1 columns (rows of a Hadamard matrix): c is exactly I.
    h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], "float32")[:, 1:]
    terms = losses.barlow_twins_terms(h, h)
    assert float(np_(terms["on_diagonal"])) < 1e-8
    assert float(np_(terms["off_diagonal"])) < 1e-10


# ---------------------------------------------------------------- VICReg


def test_vicreg_matches_reference():
    z1, z2 = 0.5 * randn(B, D, seed=15), 2 * randn(B, D, seed=16)
    terms = losses.vicreg_terms(z1, z2)
    inv, var, cov = ref_vicreg_terms(z1, z2)
    close(terms["invariance"], inv)
    close(terms["variance"], var)
    close(terms["covariance"], cov)
    close(losses.vicreg(z1, z2, 2.0, 3.0, 4.0), 2 * inv + 3 * var + 4 * cov)


def test_vicreg_variance_term_zero_when_spread_and_one_when_collapsed():
    spread = np.tile(np.array([[2.0], [-2.0]], "float32"), (B // 2, D))  # std of each dim > 1
    assert float(np_(losses.vicreg_terms(spread, -spread)["variance"])) == 0.0
    collapsed = np.tile(randn(B, D, seed=17)[:1], (B, 1))
    terms = losses.vicreg_terms(collapsed, collapsed)
    close(terms["variance"], 1 - math.sqrt(1e-4))
    close(terms["covariance"], 0.0)
    close(terms["invariance"], 0.0)


# ---------------------------------------------------------------- SwAV


def test_sinkhorn_matches_reference():
    scores = randn(B, D, seed=18)
    close(losses.sinkhorn(scores, 0.05, 3), ref_sinkhorn(scores, 0.05, 3), atol=1e-5)


def test_sinkhorn_marginals():
    q = np_(losses.sinkhorn(randn(B, D, seed=19), epsilon=0.5, iterations=100))
    assert q.shape == (B, D)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(q.sum(axis=0), B / D, atol=1e-3)


def test_sinkhorn_is_stable_and_has_no_gradient():
    q = np_(losses.sinkhorn(1e3 * randn(B, D, seed=20), epsilon=0.05))
    assert np.all(np.isfinite(q))
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    weights = randn(B, D, seed=21)
    (g,) = grads(lambda s: ops.sum(losses.sinkhorn(s) * weights), randn(B, D, seed=22))
    np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("with_queue", [False, True])
def test_swav_matches_reference(with_queue):
    scores = [randn(B, D, seed=23 + c) for c in range(4)]
    queues = [randn(B, D, seed=30), randn(B, D, seed=31)] if with_queue else None
    loss = losses.swav(scores, (0, 1), temperature=0.1, epsilon=0.05, iterations=3, queue_scores=queues)
    close(loss, ref_swav(scores, (0, 1), 0.1, 0.05, 3, queues), rtol=1e-5, atol=1e-5)


def test_swav_uniform_scores_give_log_k():
    # Zero scores: every code is 1/K and every prediction 1/K, so the loss is log K.
    close(losses.swav([np.zeros((B, D), "float32")] * 3, (0,)), math.log(D))


# ---------------------------------------------------------------- DINO


def test_dino_matches_reference():
    student = [randn(B, D, seed=40 + c) for c in range(4)]
    teacher = [randn(B, D, seed=50 + c) for c in range(2)]
    center = randn(D, seed=60)
    loss = losses.dino(student, teacher, center, 0.1, 0.04)
    close(loss, ref_dino(student, teacher, center, 0.1, 0.04))


def test_dino_hand_values_and_teacher_gets_no_gradient():
    uniform = [np.zeros((B, D), "float32")] * 3
    close(losses.dino(uniform, uniform[:2], np.zeros(D, "float32")), math.log(D))
    # The center is subtracted: shifting the teacher and the center together changes nothing.
    s, t = [randn(B, D, seed=61), randn(B, D, seed=62)], [randn(B, D, seed=63)]
    shift = randn(D, seed=64)
    close(losses.dino(s, [t[0] + shift], shift), np_(losses.dino(s, t, np.zeros(D, "float32"))))
    # Student crop 1 is compared with teacher crop 0: gradient to the student, none to the teacher.
    gs, gt = grads(lambda a, b: losses.dino([s[0], a], [b], np.zeros(D, "float32")), s[1], t[0])
    assert np.abs(gs).sum() > 0
    np.testing.assert_array_equal(gt, 0.0)


# ---------------------------------------------------------------- CLIP


def test_clip_matches_reference_and_hand_value():
    img, txt = randn(B, D, seed=70), randn(B, D, seed=71)
    close(losses.clip(img, txt, 14.3), ref_clip(img, txt, 14.3))
    close(losses.clip(img, txt, ops.convert_to_tensor(2.0)), ref_clip(img, txt, 2.0))
    # Perfect alignment with a large scale: log(1 + 3 e^-100) ~ 0.
    eye = np.eye(B, D, dtype="float32")
    assert float(np_(losses.clip(eye, 5 * eye, 100.0))) < 1e-6


# ---------------------------------------------------------------- MAE


@pytest.mark.parametrize("normalize", [False, True])
def test_mae_matches_reference(normalize):
    target, pred = randn(2, 6, 4, seed=80), randn(2, 6, 4, seed=81)
    mask = (rng(82).random((2, 6)) < 0.6).astype("float32")
    mask[0, 0] = 1.0
    loss = losses.mae_reconstruction(target, pred, mask, normalize=normalize)
    close(loss, ref_mae(target, pred, mask, normalize))


def test_mae_ignores_visible_patches():
    target, pred = randn(2, 6, 4, seed=83), randn(2, 6, 4, seed=84)
    mask = np.array([[1, 0, 1, 0, 0, 1], [0, 0, 1, 1, 0, 0]], "float32")
    changed = pred + 100 * (1 - mask)[..., None]
    before = np_(losses.mae_reconstruction(target, pred, mask))
    close(losses.mae_reconstruction(target, changed, mask), before)
    all_masked = losses.mae_reconstruction(target, pred, np.ones((2, 6), "float32"))
    close(all_masked, np.mean((pred - target) ** 2.0))
    close(losses.mae_reconstruction(target, pred, np.zeros((2, 6), "float32")), 0.0)  # not NaN


# ---------------------------------------------------------------- bad input, dtypes

Z = randn(B, D, seed=90)
S = [randn(B, D, seed=91), randn(B, D, seed=92)]


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: losses.nt_xent(Z, Z, 0.0), "temperature"),
        (lambda: losses.nt_xent(Z, Z, -0.5), "temperature"),
        (lambda: losses.info_nce(Z, Z, 0.0), "temperature"),
        (lambda: losses.sinkhorn(S[0], epsilon=0.0), "epsilon"),
        (lambda: losses.sinkhorn(S[0], iterations=0), "iterations"),
        (lambda: losses.swav(S, temperature=-1.0), "temperature"),
        (lambda: losses.swav(S, epsilon=0.0), "epsilon"),
        (lambda: losses.swav(S[:1], (0,)), "crops"),
        (lambda: losses.swav(S, (0, 2)), "assignment_crops"),
        (lambda: losses.swav(S, (0, 1), queue_scores=[S[0]]), "queue_scores"),
        (lambda: losses.dino(S, S, np.zeros(D), student_temperature=0.0), "student_temperature"),
        (lambda: losses.dino(S, S, np.zeros(D), teacher_temperature=0.0), "teacher_temperature"),
        (lambda: losses.dino(S[:1], S, np.zeros(D)), "teacher crops"),
        (lambda: losses.clip(Z, Z, 0.0), "logit_scale"),
        (lambda: losses.barlow_twins(Z[:1], Z[:1]), "batch size"),
        (lambda: losses.vicreg(Z[:1], Z[:1]), "batch size"),
        (lambda: losses.mae_reconstruction(Z, Z, Z), "rank 3"),
    ],
)
def test_bad_arguments_raise_value_error(call, name):
    with pytest.raises(ValueError, match=name):
        call()


LOSS_CALLS = {
    "nt_xent": lambda a, b: losses.nt_xent(a, b, 0.1),
    "info_nce": lambda a, b: losses.info_nce(a, b, 0.2, negatives=b),
    "negative_cosine": losses.negative_cosine,
    "byol": losses.byol_loss,
    "barlow_twins": losses.barlow_twins,
    "barlow_twins_terms": losses.barlow_twins_terms,
    "vicreg": losses.vicreg,
    "vicreg_terms": losses.vicreg_terms,
    "sinkhorn": lambda a, b: losses.sinkhorn(a),
    "swav": lambda a, b: losses.swav([a, b, a], queue_scores=[b, None]),
    "dino": lambda a, b: losses.dino([a, b, a], [b, a], ops.zeros((ops.shape(a)[1],), a.dtype)),
    "clip": lambda a, b: losses.clip(a, b, ops.cast(20.0, a.dtype)),
    "mae": lambda a, b: losses.mae_reconstruction(
        ops.expand_dims(a, 1), ops.expand_dims(b, 1), ops.ones((ops.shape(a)[0], 1), a.dtype), True
    ),
}


def _values(result):
    return list(result.values()) if isinstance(result, dict) else [result]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_inputs_give_float32(dtype):
    a, b = ops.cast(randn(B, D, seed=93), dtype), ops.cast(randn(B, D, seed=94), dtype)
    rounded = np_(a).astype("float32"), np_(b).astype("float32")
    for name, call in LOSS_CALLS.items():
        for low, high in zip(_values(call(a, b)), _values(call(*rounded))):
            assert keras.backend.standardize_dtype(low.dtype) == "float32", name
            # Same value as the float32 computation on the rounded inputs.
            close(low, np_(high), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- property tests


@st.composite
def embedding_pairs(draw):
    kind = draw(st.sampled_from(["random", "extreme", "identical", "collapsed", "orthogonal"]))
    dtype = draw(st.sampled_from(["float32", "bfloat16", "float16"]))
    batch, dim = B, D  # D >= 2B leaves room for orthogonal views
    r = rng(draw(st.integers(0, 2**16)))
    a, b = r.standard_normal((batch, dim)), r.standard_normal((batch, dim))
    if kind == "extreme":
        a, b = 1e4 * a, 1e4 * b
    elif kind == "identical":
        b = a
    elif kind == "collapsed":
        a = b = np.tile(a[:1], (batch, 1))
    elif kind == "orthogonal":
        a, b = np.eye(dim)[:batch], 3 * np.eye(dim)[batch:]
    return dtype, a.astype("float32"), b.astype("float32")


@settings(max_examples=25, deadline=None)
@given(embedding_pairs(), st.sampled_from([0.05, 0.1, 0.5, 1.0]), st.floats(1.0, 100.0))
def test_losses_finite_and_bounded(pair, temperature, scale):
    dtype, a, b = pair
    a, b = ops.cast(a, dtype), ops.cast(b, dtype)
    batch, tol = a.shape[0], 1e-4

    def value(x):
        x = np_(x)
        assert np.all(np.isfinite(x))
        return float(x)

    assert -tol <= value(losses.nt_xent(a, b, temperature)) <= math.log(2 * batch - 1) + 2 / temperature + tol
    assert -tol <= value(losses.clip(a, b, scale)) <= math.log(batch) + 2 * scale + tol
    assert -1 - tol <= value(losses.negative_cosine(a, b)) <= 1 + tol
    assert -tol <= value(losses.byol_loss(a, b)) <= 4 + tol
    assert value(losses.info_nce(a, b, temperature)) >= -tol
    for name in ("barlow_twins", "vicreg", "swav", "dino"):
        assert value(LOSS_CALLS[name](a, b)) >= -tol, name


def test_embedding_std_matches_numpy_and_reads_zero_when_collapsed():
    z = np.random.default_rng(0).normal(size=(64, 16)).astype("float32") * 3.0
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    expected = unit.std(axis=0).mean()
    np.testing.assert_allclose(float(losses.embedding_std(z)), expected, rtol=1e-5)
    collapsed = np.tile(z[:1], (64, 1))
    assert float(losses.embedding_std(collapsed)) == pytest.approx(0.0, abs=1e-6)
