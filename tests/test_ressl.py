"""ReSSL: the relational loss vs a float64 NumPy reference, the queue over steps, the views, one harness run;
its multi-crop option against a port of the official `ressl_multi.py`, and through the harness."""

import keras
import numpy as np
import pytest
from conftest import grads, random_images, small_encoder
from method_harness import run_method_test
from numpy_refs_relational import enqueue as numpy_enqueue
from numpy_refs_relational import ressl_loss as numpy_ressl
from numpy_refs_relational import softmax, unit

from keras_ssl.layers import MemoryBank
from keras_ssl.losses.relational import ressl
from keras_ssl.methods.ressl import ReSSL, ressl_views
from keras_ssl.views import RandomResizedCrop, ReSSLMultiCrop

MAKERS = {
    "ressl": lambda: ReSSL(small_encoder(), queue_size=16, hidden_dim=16, projection_dim=8, seed=1),
}


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_hand_computed_cases():
    queue = np.eye(2, dtype="float32")
    # Equidistant from both queue rows: the student's distribution is uniform, whatever the teacher's.
    student, teacher = np.array([[3.0, 3.0]], "float32"), np.array([[1.0, 0.2]], "float32")
    assert float(ressl(student, teacher, queue)) == pytest.approx(np.log(2.0), rel=1e-6)
    assert numpy_ressl(student, teacher, queue)[0] == pytest.approx(np.log(2.0), rel=1e-12)
    # On the first row, temperatures 1 and 0.5: logits (1, 0) for the student, (2, 0) for the teacher, so
    # loss = -(t0 log p0 + t1 log p1) = log(1 + e^-1) + t1 with t1 = e^-2 / (1 + e^-2).
    one = np.array([[2.0, 0.0]], "float32")
    expected = np.log1p(np.exp(-1.0)) + np.exp(-2.0) / (1 + np.exp(-2.0))
    assert float(ressl(one, one, queue, 1.0, 0.5)) == pytest.approx(expected, rel=1e-6)
    assert numpy_ressl(one, one, queue, 1.0, 0.5)[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("temperatures", [(0.1, 0.04), (0.2, 0.07), (0.05, 0.05)])
def test_loss_and_gradients_match_the_official_code(temperatures):
    rng = np.random.default_rng(3)
    student = rng.normal(size=(8, 16)).astype("float32")
    teacher = rng.normal(size=(8, 16)).astype("float32")
    queue = unit(rng.normal(size=(24, 16))).astype("float32")
    loss, grad_student = numpy_ressl(student, teacher, queue, *temperatures)
    np.testing.assert_allclose(float(ressl(student, teacher, queue, *temperatures)), loss, rtol=1e-5)
    g_student, g_teacher, g_queue = grads(lambda s, t, q: ressl(s, t, q, *temperatures), student, teacher, queue)
    np.testing.assert_allclose(g_student, grad_student, rtol=1e-4, atol=1e-6)
    # The teacher's distribution is a target and the queue is state: no gradient reaches them.
    np.testing.assert_array_equal(g_teacher, 0.0)
    np.testing.assert_array_equal(g_queue, 0.0)
    # Not normalised on entry: the queue is normalised by the loss too.
    np.testing.assert_allclose(float(ressl(student, teacher, 3.0 * queue, *temperatures)), loss, rtol=1e-5)


def test_the_loss_is_one_directional():
    rng = np.random.default_rng(4)
    a, b, queue = rng.normal(size=(4, 8)), rng.normal(size=(4, 8)), rng.normal(size=(16, 8))
    assert abs(float(ressl(a, b, queue)) - float(ressl(b, a, queue))) > 1e-3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"student_temperature": 0.0}, "student_temperature"),
        ({"teacher_temperature": -1.0}, "teacher_temperature"),
        ({"queue": np.ones((16, 4))}, "same width"),
        ({"queue": np.ones(16)}, "rank 2"),
    ],
)
def test_loss_rejects_bad_arguments(kwargs, match):
    args = {"student": np.ones((4, 8)), "teacher": np.ones((4, 8)), "queue": np.ones((16, 8)), **kwargs}
    with pytest.raises(ValueError, match=match):
        ressl(**args)


def test_queue_and_loss_replayed_in_numpy_over_three_steps():
    model = MAKERS["ressl"]()
    queue, pointer = np.array(model.queue.queue, np.float64), 0
    for step in range(3):
        weak = random_images(8, seed=10 + step).astype("float32") / 255.0
        strong = random_images(8, seed=20 + step).astype("float32") / 255.0
        out = model.ssl_forward([weak, strong], training=True)
        # The student embeds the strong view, the teacher (a copy of it: no EMA step yet) the weak one.
        student_net = model.projector(model.encoder(strong, training=True))
        np.testing.assert_allclose(to_numpy(out["student"]), to_numpy(student_net), atol=1e-5)
        teacher_net = model.projector(model.encoder(weak, training=True))
        np.testing.assert_allclose(to_numpy(out["teacher"]), to_numpy(teacher_net), atol=1e-5)
        loss, terms = model.compute_ssl_loss(out)
        expected = numpy_ressl(to_numpy(out["student"]), to_numpy(out["teacher"]), queue)[0]
        assert terms == {} and float(to_numpy(loss)) == pytest.approx(expected, rel=1e-5)
        model.update_state(out)
        queue, pointer = numpy_enqueue(queue, pointer, to_numpy(out["teacher"]))
        np.testing.assert_allclose(np.array(model.queue.queue), queue, atol=1e-6)
        assert int(model.queue.pointer) == pointer
    assert pointer == 8 and int(model.queue.filled) == 16  # 24 keys wrapped around 16 rows


def test_views_are_weak_then_strong():
    weak, strong = ressl_views(16, seed=0).augment, ressl_views(16, seed=0).augment_2
    assert isinstance(weak, RandomResizedCrop) and weak.scale == (0.2, 1.0) and weak.horizontal_flip
    names = [type(layer).__name__ for layer in strong.layers]
    assert names == ["RandomResizedCrop", "RandomApply", "RandomGrayscale"]  # no blur at CIFAR size
    crop, jitter, gray = strong.layers
    assert crop.scale == (0.2, 1.0) and crop.horizontal_flip and jitter.rate == 0.8 and gray.factor == 0.2
    j = jitter.layer
    assert (j.brightness, j.contrast, j.saturation, j.hue) == ((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1))
    big = ressl_views(64, seed=0).augment_2.layers
    assert type(big[-1]).__name__ == "RandomApply" and big[-1].rate == 0.5  # MoCo v2's blur above 32 px
    assert ressl_views(16, min_crop_scale=0.3, horizontal_flip=False, seed=0).augment.scale == (0.3, 1.0)
    # The weak view changes no colour: a flat image stays flat and keeps its colour.
    flat = np.broadcast_to(np.array([0.2, 0.5, 0.9], "float32"), (4, 16, 16, 3))
    v_weak, v_strong = ressl_views(16, seed=1)(flat, training=True)
    np.testing.assert_allclose(to_numpy(v_weak), flat, atol=1e-5)
    assert np.abs(to_numpy(v_strong) - flat).max() > 1e-2


def test_defaults_follow_the_paper_and_bad_options_fail():
    model = ReSSL(small_encoder(), seed=1)
    assert (model.student_temperature, model.teacher_temperature, model.queue_size) == (0.1, 0.04, 4096)
    assert (model.projection_dim, model.hidden_dim, model.momentum, model.momentum_end) == (128, 16, 0.99, 0.99)
    assert isinstance(model.queue, MemoryBank) and model.queue.queue.shape == (4096, 128)
    for kw, match in [({"teacher_temperature": 0}, "teacher_temperature"), ({"queue_size": 1}, "queue_size")]:
        with pytest.raises(ValueError, match=match):
            ReSSL(small_encoder(), **kw)


def ressl_multi_loss(students, teacher, queue, student_temperature=0.1, teacher_temperature=0.04):
    """Float64 port of the official multi-crop loss (KyleZheng1997/ReSSL `network/ressl_multi.py`,
    `ReSSL.forward`, and `ressl_multi.py`, `train`): `logitsq = cat(q_list) @ queue`, `logitsk = (k @ queue)`
    repeated once per student crop, `loss = -sum(softmax(logitsk / t) * log_softmax(logitsq / 0.1)).mean()`."""
    queue = unit(queue)
    logits_q = np.concatenate([unit(s) for s in students]) @ queue.T
    logits_k = np.tile(unit(teacher) @ queue.T, (len(students), 1))
    log_p = np.log(softmax(logits_q / student_temperature))
    return float(-np.mean(np.sum(softmax(logits_k / teacher_temperature) * log_p, axis=1)))


def multi_crop_ressl(num_local=2):
    views = ReSSLMultiCrop(16, local_size=8, num_local=num_local, seed=10)
    encoder = small_encoder((None, None, 3))
    return ReSSL(encoder, input_shape=(16, 16, 3), views=views, queue_size=16, hidden_dim=16, projection_dim=8, seed=1)


def test_multi_crop_students_and_loss_match_the_official_code():
    model = multi_crop_ressl()
    assert model.view_shapes == [(16, 16, 3), (16, 16, 3), (8, 8, 3), (8, 8, 3)]
    # Local views are an option of the instance; the class (the CLI's default) takes none.
    assert model.local_views and not ReSSL.local_views and not MAKERS["ressl"]().local_views
    # Views of the declared sizes (the view maker is tested on its own below).
    views = [random_images(8, size, seed=i).astype("float32") / 255.0 for i, size in enumerate((16, 16, 8, 8))]
    out = model.ssl_forward(views, training=True)
    # Every strong crop is a student, each encoded alone: ressl_multi.py's [self.encoder_q(im) for im in im_q].
    students = [to_numpy(model.projector(model.encoder(v, training=True))) for v in views[1:]]
    np.testing.assert_allclose(to_numpy(out["student"]), np.concatenate(students), atol=1e-5)
    together = to_numpy(model.projector(model.encoder(keras.ops.concatenate(views[2:], axis=0), training=True)))
    assert not np.allclose(together, np.concatenate(students[1:]), atol=1e-3)  # BatchNorm tells the two apart
    teacher = to_numpy(model.teacher_projector(model.teacher_encoder(views[0], training=True)))
    np.testing.assert_allclose(to_numpy(out["teacher"]), teacher, atol=1e-5)
    # The loss of three crops against the official code, and the mean of the single-crop losses.
    rng = np.random.default_rng(5)
    students = [rng.normal(size=(4, 8)) for _ in range(3)]
    teacher, queue = rng.normal(size=(4, 8)), rng.normal(size=(16, 8))
    want = ressl_multi_loss(students, teacher, queue, 0.2, 0.05)
    assert want == pytest.approx(np.mean([numpy_ressl(s, teacher, queue, 0.2, 0.05)[0] for s in students]), rel=1e-12)
    model.student_temperature, model.teacher_temperature = 0.2, 0.05
    model.queue.queue.assign(unit(queue).astype("float32"))
    outputs = {"student": np.concatenate(students).astype("float32"), "teacher": teacher.astype("float32")}
    loss, terms = model.compute_ssl_loss(outputs)
    assert terms == {} and float(to_numpy(loss)) == pytest.approx(want, rel=1e-5)
    model.update_state(out)
    assert int(model.queue.pointer) == 8  # only the teacher's keys enter the queue


def test_multi_crop_views_follow_the_official_recipe():
    views = ReSSLMultiCrop(16, local_size=8, num_local=1, seed=0)
    assert (views.num_global, views.num_local, views.local_scale) == (2, 1, (0.1, 0.5))  # (0.2 r, r), r = 1/2
    assert views.view_shapes((16, 16, 3)) == [(16, 16, 3)] * 2 + [(8, 8, 3)]
    assert ReSSLMultiCrop(32, local_size=16, num_local=3, min_crop_scale=0.3).local_scale == (0.3, 0.5)
    # The weak view changes no colour, every other crop is strong.
    flat = np.broadcast_to(np.array([0.2, 0.5, 0.9], "float32"), (4, 16, 16, 3))
    out = [to_numpy(v) for v in views(flat, training=True)]
    np.testing.assert_allclose(out[0], flat, atol=1e-5)
    for v in out[1:]:
        assert np.abs(v - flat[:, : v.shape[1], : v.shape[2]]).max() > 1e-2
    again = ReSSLMultiCrop.from_config(views.get_config())
    assert again.get_config() == views.get_config()
    for bad in ({"num_local": 0}, {"local_size": 64}):
        with pytest.raises(ValueError, match="num_local"):
            ReSSLMultiCrop(32, **bad)


def test_multi_crop_option_passes_the_method_harness(tmp_path):
    # One local crop: each crop's augmentation is traced in the step, and one shows the option.
    loaded = run_method_test(lambda: multi_crop_ressl(num_local=1), random_images(16), tmp_path)
    assert isinstance(loaded.views, ReSSLMultiCrop) and loaded.views.num_local == 1 and loaded.local_views
