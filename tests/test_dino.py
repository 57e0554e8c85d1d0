"""DINO and DINOHead: training, loss, centre and teacher EMAs vs NumPy, saving."""

import math

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder
from keras import ops
from numpy_refs import dino as numpy_dino
from test_swav import Crops, to_np

from keras_ssl.callbacks import MomentumScheduler
from keras_ssl.layers.heads import DINOHead
from keras_ssl.methods.dino import DINO


def make_model(encoder=None, **kw):
    kw.setdefault("output_dim", 32)
    kw.setdefault("hidden_dim", 16)
    kw.setdefault("bottleneck_dim", 8)
    kw.setdefault("views", Crops(seed=10))
    encoder = encoder or small_encoder((None, None, 3))
    return DINO(encoder, input_shape=(16, 16, 3), seed=1, **kw)


def cosine_tau(base, end, step, total):
    return end - (end - base) * (np.cos(np.pi * min(step / total, 1.0)) + 1) / 2


def student_teacher_pairs(model):
    pairs = []
    for online, target in ((model.encoder, model.teacher_encoder), (model.head, model.teacher_head)):
        pairs += [(o, t) for o, t in zip(online.weights, target.weights) if o.trainable]
    return pairs


# Op-by-op JAX costs ~10 s here; eager JAX through multi-crop is covered by test_swav.


def test_numpy_dino_reference_on_a_hand_case():
    # K = 2, one sample. Both teacher crops are [1, 1 + 0.5 ln 3]: centred by [1, 1] and
    # divided by tau_t = 0.5 they are [0, ln 3], so q = [1/4, 3/4]. Student crops (tau_s = 1):
    # crop 0 is [0, 0] (uniform: cross-entropy ln 2 whatever q), crops 1 and 2 are [0, ln 3]
    # (p = q: cross-entropy H = ln 4 - (3/4) ln 3). Pairs (iq, v != iq): (0, 1), (0, 2),
    # (1, 0), (1, 2) -> (3 H + ln 2) / 4. (With the v == iq pairs it would be (4 H + 2 ln 2) / 6.)
    teacher = [np.array([[1.0, 1.0 + 0.5 * np.log(3)]])] * 2
    student = [np.array([[0.0, 0.0]]), np.array([[0.0, np.log(3)]]), np.array([[0.0, np.log(3)]])]
    h = np.log(4) - 0.75 * np.log(3)
    got = numpy_dino(student, teacher, [1.0, 1.0], student_temperature=1.0, teacher_temperature=0.5)
    np.testing.assert_allclose(got, (3 * h + np.log(2)) / 4, rtol=1e-12)


def test_loss_is_dino_of_its_own_outputs_with_warmed_up_temperature():
    model = make_model(warmup_teacher_temperature=0.02, teacher_temperature=0.06, warmup_teacher_steps=4)
    model.step.assign(1)
    # A non-zero centre; centre and temperature are read before the step, whose loss
    # must use them (not the centre this step updates).
    model.center.assign(0.1 * np.random.default_rng(0).normal(size=32).astype("float32"))
    center = np.array(model.center)
    temperature = float(ops.convert_to_numpy(model.current_teacher_temperature()))
    # main_dino.py's schedule: np.linspace(warmup, final, W) over the first W steps, then final.
    official = np.concatenate([np.linspace(0.02, 0.06, 4), np.full(8, 0.06)])
    np.testing.assert_allclose(temperature, official[1], rtol=1e-6)
    x = random_images(8)
    out = model(x, training=True)
    np_out = to_np(out)
    student = np_out["student"]
    teacher = np_out["teacher"]
    expected = numpy_dino(student, teacher, center, 0.1, official[1])
    got = model.compute_loss(x, None, out, None, training=True)
    np.testing.assert_allclose(ops.convert_to_numpy(got), expected, rtol=1e-5)
    for step in (2, 3, 9):
        model.step.assign(step)
        np.testing.assert_allclose(float(model.current_teacher_temperature()), official[step], rtol=1e-6)


def test_student_and_teacher_encoders_run_once_per_resolution():
    model = make_model()
    model.build()  # its forward on blank images is not what we count
    shapes = {"student": [], "teacher": []}
    for key, encoder in (("student", model.encoder), ("teacher", model.teacher_encoder)):

        def counting(inputs, *args, _call=encoder.call, _key=key, **kwargs):
            shapes[_key].append(tuple(inputs.shape))
            return _call(inputs, *args, **kwargs)

        encoder.call = counting
    model(random_images(8), training=True)
    assert shapes == {"student": [(16, 16, 16, 3), (16, 8, 8, 3)], "teacher": [(16, 16, 16, 3)]}


def test_center_is_an_ema_of_teacher_batch_means():
    model = make_model(center_momentum=0.8)
    x = random_images(8)
    expected = np.zeros(32, "float32")
    for _ in range(3):
        # Before each step the centre is the previous EMA (the loss uses it: see the loss test).
        np.testing.assert_allclose(np.array(model.center), expected, atol=1e-6)
        out = to_np(model(x, training=True))
        batch_mean = np.concatenate([out["teacher"][0], out["teacher"][1]]).mean(axis=0)
        expected = 0.8 * expected + 0.2 * batch_mean
        np.testing.assert_allclose(np.array(model.center), expected, atol=1e-6)
    assert np.abs(expected).max() > 0
    model.compile(optimizer="sgd")
    model.evaluate(x, batch_size=8, verbose=0)
    np.testing.assert_allclose(np.array(model.center), expected, atol=1e-6)


def test_teacher_is_a_cosine_ema_of_the_student():
    total = 3
    model = make_model(momentum=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    x = random_images(8)
    pairs = student_teacher_pairs(model)
    assert not {id(t) for _, t in pairs} & {id(v) for v in model.trainable_variables}
    expected = [np.array(t) for _, t in pairs]
    for k in range(total):
        online = [np.array(o) for o, _ in pairs]
        tau = cosine_tau(0.5, 1.0, k, total)
        expected = [tau * e + (1 - tau) * o for e, o in zip(expected, online)]
        model.fit(x, batch_size=8, epochs=1, verbose=0, callbacks=[MomentumScheduler(total_steps=total)])
        for e, (_, t) in zip(expected, pairs):
            np.testing.assert_allclose(np.array(t), e, atol=1e-5)
    assert any(np.abs(np.array(o) - np.array(t)).max() > 1e-4 for o, t in pairs)


def test_teacher_gets_no_gradient_with_momentum_one():
    model = make_model(momentum=1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    teachers = [np.array(t) for _, t in student_teacher_pairs(model)]
    model.fit(random_images(16), batch_size=8, epochs=1, verbose=0)
    for before, (_, t) in zip(teachers, student_teacher_pairs(model)):
        np.testing.assert_array_equal(np.array(t), before)


def test_whole_model_saves_center_and_teacher_and_continues(tmp_path):
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = random_images(16)
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "dino.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, DINO) and loaded.center_momentum == 0.9
    assert np.abs(np.array(model.center)).max() > 0
    np.testing.assert_array_equal(np.array(loaded.center), np.array(model.center))
    for a, b in zip(student_teacher_pairs(model), student_teacher_pairs(loaded)):
        np.testing.assert_array_equal(np.array(a[1]), np.array(b[1]))
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(loaded.fit(x, batch_size=8, epochs=1, verbose=0).history["loss"][0])
    assert int(loaded.step) == 4


def test_dino_head_matches_numpy():
    head = DINOHead(6, hidden_dim=5, bottleneck_dim=3, num_layers=2)
    head.build((None, 4))
    assert not head.last_g.trainable and len(head.trainable_weights) == 5
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    (k1, b1), (k2, b2) = [(np.array(d.kernel), np.array(d.bias)) for d in head.mlp]
    h = x @ k1 + b1
    h = 0.5 * h * (1 + np.vectorize(math.erf)(h / np.sqrt(2)))  # exact GELU (as the paper)
    h = h @ k2 + b2
    h = h / np.linalg.norm(h, axis=1, keepdims=True)
    v = np.array(head.last_v)
    expected = h @ (v / np.linalg.norm(v, axis=0, keepdims=True))
    np.testing.assert_allclose(ops.convert_to_numpy(head(x)), expected, atol=1e-5)
    free = DINOHead(6, 5, 3, norm_last_layer=False)
    free.build((None, 4))
    assert free.last_g.trainable
    with pytest.raises(ValueError, match="num_layers"):
        DINOHead(6, num_layers=0)


def test_dino_head_with_batch_norm_matches_numpy():
    # The official DINOHead(use_bn=True): Linear -> BatchNorm1d (batch statistics, eps 1e-5) -> GELU
    # for each hidden layer; the bottleneck Linear has no norm.
    head = DINOHead(6, hidden_dim=5, bottleneck_dim=3, num_layers=3, use_bn=True)
    head.build((None, 4))
    x = np.random.default_rng(1).normal(size=(7, 4)).astype("float32")
    h = x
    for i, dense in enumerate(head.mlp):
        h = h @ np.array(dense.kernel) + np.array(dense.bias)
        if i < 2:
            h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5)  # gamma 1, beta 0 at init
            h = 0.5 * h * (1 + np.vectorize(math.erf)(h / np.sqrt(2)))
    h = h / np.linalg.norm(h, axis=1, keepdims=True)
    v = np.array(head.last_v)
    expected = h @ (v / np.linalg.norm(v, axis=0, keepdims=True))
    np.testing.assert_allclose(ops.convert_to_numpy(head(x, training=True)), expected, atol=1e-5)
    assert len(head.trainable_weights) == 1 + 6 + 4  # last_v, three Dense, two BatchNorms
    assert DINOHead.from_config(head.get_config()).use_bn
    model = make_model(use_bn_in_head=True)
    assert model.head.use_bn and model.get_config()["use_bn_in_head"]


def test_accepts_a_vit_encoder():
    from keras_ssl.backbones.vit import vit

    model = make_model(vit(image_size=16, patch_size=4, dim=16, depth=1, heads=2))
    out = to_np(model(random_images(8), training=True))
    assert out["student"][2].shape == (8, 32) and np.isfinite(out["student"][2]).all()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"student_temperature": 0.0}, "student_temperature"),
        ({"teacher_temperature": -0.04}, "teacher_temperature"),
        ({"center_momentum": 1.0}, "center_momentum"),
        ({"momentum": 1.5}, "momentum"),
        ({"warmup_teacher_steps": -1}, "warmup_teacher_steps"),
        ({"freeze_last_layer_steps": 1.5}, "freeze_last_layer_steps"),
    ],
)
def test_bad_options_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        make_model(**kw)
