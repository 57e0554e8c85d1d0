"""SigLIP: the sigmoid loss (value, gradients, chunks, the ring of JAX devices) and the model."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import BACKEND, grads, random_images, small_encoder, tiny_text_model
from keras import ops
from numpy_refs_siglip import siglip as numpy_siglip
from numpy_refs_siglip import siglip_grads as numpy_siglip_grads

from keras_ssl.losses.sigmoid import siglip
from keras_ssl.methods.siglip import SigLIP
from keras_ssl.text import Tokenizer, cifar10_captions

CAPTIONS = cifar10_captions(np.arange(16) % 10, seed=0)
TOKENIZER = Tokenizer(max_length=12).adapt(CAPTIONS)

MAKERS = {
    "siglip": lambda: tiny_text_model(SigLIP, chunk_size=4),
}


def test_numpy_reference_on_hand_cases():
    # Images e1, e2 against texts e1, e2 at t = 1, b = 0: logits = I. Row 1: -log s(1) - log s(-0)...
    # each row has one positive at logit 1 and one negative at logit 0:
    # loss = log(1 + e^-1) + log 2.
    got = numpy_siglip([[3.0, 0.0], [0.0, 2.0]], np.eye(2), 1.0, 0.0)
    np.testing.assert_allclose(got, np.log1p(np.exp(-1.0)) + np.log(2.0), rtol=1e-12)
    # The bias alone (orthogonal pairs, t = 0): one positive at b, B - 1 negatives at b.
    b, n = -10.0, 4
    expected = np.log1p(np.exp(-b)) + (n - 1) * np.log1p(np.exp(b))
    np.testing.assert_allclose(numpy_siglip(np.eye(n), np.eye(n), 0.0, b), expected, rtol=1e-12)


def test_numpy_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    x, y, t, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), 2.5, -1.5
    dx, dy, dt, db = numpy_siglip_grads(x, y, t, b)
    eps = 1e-6

    def numeric(f, a):
        out = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            up, down = a.copy(), a.copy()
            up[i] += eps
            down[i] -= eps
            out[i] = (f(up) - f(down)) / (2 * eps)
        return out

    np.testing.assert_allclose(dx, numeric(lambda a: numpy_siglip(a, y, t, b), x), atol=1e-7)
    np.testing.assert_allclose(dy, numeric(lambda a: numpy_siglip(x, a, t, b), y), atol=1e-7)
    np.testing.assert_allclose(dt, (numpy_siglip(x, y, t + eps, b) - numpy_siglip(x, y, t - eps, b)) / (2 * eps))
    np.testing.assert_allclose(db, (numpy_siglip(x, y, t, b + eps) - numpy_siglip(x, y, t, b - eps)) / (2 * eps))


@pytest.mark.parametrize("chunk_size", [None, 4, 1])
def test_loss_and_gradients_match_numpy(chunk_size):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 5)).astype("float32"), rng.normal(size=(6, 5)).astype("float32")
    t, b = np.float32(3.0), np.float32(-2.0)
    got = float(ops.convert_to_numpy(siglip(x, y, t, b, chunk_size=chunk_size)))
    np.testing.assert_allclose(got, numpy_siglip(x, y, 3.0, -2.0), rtol=1e-5)
    # chunks of 4 over 6 texts: a full chunk and a short one
    got_grads = grads(lambda *a: siglip(*a, chunk_size=chunk_size), x, y, t, b)
    for g, expected in zip(got_grads, numpy_siglip_grads(x, y, 3.0, -2.0)):
        np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6)


def test_bad_arguments_are_rejected():
    x = np.ones((4, 3), "float32")
    with pytest.raises(ValueError, match="chunk_size"):
        siglip(x, x, 1.0, 0.0, chunk_size=0)
    with pytest.raises(ValueError, match="pair up"):
        siglip(x, x[:3], 1.0, 0.0)
    with pytest.raises(ValueError, match="rank 2"):
        siglip(x[0], x[0], 1.0, 0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        SigLIP(small_encoder(), tokenizer=TOKENIZER, chunk_size=0)


# The loss and its gradients under DataParallel on 4 virtual devices (the ring) and on one.
RING = textwrap.dedent(
    """
    import json, keras, numpy as np, jax
    from keras_ssl import distribute
    from keras_ssl.losses.sigmoid import siglip
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(8, 6)).astype("float32"), rng.normal(size=(8, 6)).astype("float32")
    t, b = np.float32(4.0), np.float32(-3.0)
    out = {}
    for name in ("one", "ring"):
        keras.distribution.set_distribution(distribute.data_parallel(4) if name == "ring" else None)
        for chunk in (None, 1):
            f = jax.jit(jax.value_and_grad(lambda *a: siglip(*a, chunk_size=chunk), argnums=(0, 1, 2, 3)))
            value, g = f(x, y, t, b)
            jaxpr = str(jax.make_jaxpr(lambda *a: siglip(*a, chunk_size=chunk))(x, y, t, b))
            out[f"{name}_{chunk}"] = {"value": float(value), "grads": [np.asarray(v).tolist() for v in g],
                                      "ppermutes": jaxpr.count("ppermute")}
    print("RESULTS" + json.dumps({"inputs": [x.tolist(), y.tolist()], **out}))
    """
)


@pytest.mark.skipif(BACKEND != "jax", reason="the ring of devices is JAX's (shard_map, ppermute)")
def test_ring_on_four_devices_equals_one_device(tmp_path):
    script = tmp_path / "ring.py"
    script.write_text(RING)
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=os.getcwd(), TF_CPP_MIN_LOG_LEVEL="2")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    line = [row for row in proc.stdout.splitlines() if row.startswith("RESULTS")]
    assert proc.returncode == 0 and line, proc.stderr[-4000:]
    r = json.loads(line[0][len("RESULTS") :])
    x, y = np.array(r["inputs"][0]), np.array(r["inputs"][1])
    expected_grads = numpy_siglip_grads(x, y, 4.0, -3.0)
    for chunk in (None, 1):
        one, ring = r[f"one_{chunk}"], r[f"ring_{chunk}"]
        assert one["ppermutes"] == 0 and ring["ppermutes"] == 3  # 4 devices: 3 hops round the ring
        np.testing.assert_allclose(ring["value"], one["value"], rtol=1e-6)
        np.testing.assert_allclose(ring["value"], numpy_siglip(x, y, 4.0, -3.0), rtol=1e-5)
        for g_ring, g_one, expected in zip(ring["grads"], one["grads"], expected_grads):
            np.testing.assert_allclose(g_ring, g_one, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(g_ring, expected, rtol=1e-4, atol=1e-6)


def test_model_starts_at_the_papers_scale_and_bias_and_uses_them():
    model = SigLIP(small_encoder(), tokenizer=TOKENIZER, embed_dim=8, text_width=8, text_depth=1, text_heads=2)
    np.testing.assert_allclose(float(ops.convert_to_numpy(model.logit_scale)), 10.0, rtol=1e-6)
    np.testing.assert_allclose(float(ops.convert_to_numpy(model.logit_bias)), -10.0)
    assert model.logit_bias.trainable and model.log_logit_scale.trainable
    model.logit_bias.assign(-2.0)
    model.log_logit_scale.assign(np.log(5.0))
    rng = np.random.default_rng(3)
    z, text = rng.normal(size=(6, 8)).astype("float32"), rng.normal(size=(6, 8)).astype("float32")
    loss, terms = model.compute_ssl_loss({"z1": z, "text": text})
    np.testing.assert_allclose(float(ops.convert_to_numpy(loss)), numpy_siglip(z, text, 5.0, -2.0), rtol=1e-5)
    assert sorted(terms) == ["logit_bias", "logit_scale"]
    np.testing.assert_allclose(float(ops.convert_to_numpy(terms["logit_bias"])), -2.0)


def test_bias_and_scale_are_trained_and_zero_shot_is_clips():
    # The model trains in the shared harness (tests/test_methods.py); here an untrained one.
    images = random_images(16)
    loaded = MAKERS["siglip"]()
    loaded.build()
    trainable = {id(v) for v in loaded.trainable_variables}
    assert id(loaded.logit_bias) in trainable and id(loaded.log_logit_scale) in trainable
    # zero-shot as CLIP: softmax over classes of t * cosine(image, mean template embedding)
    names, templates = ["cat", "dog", "ship"], ("a photo of a {}.", "the {} in this photo.")
    probabilities = loaded.zero_shot_classifier(names, templates).predict(images / 255.0, verbose=0)
    classes = np.stack([loaded.encode_text([t.format(c) for t in templates]).mean(0) for c in names])
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    logits = float(ops.convert_to_numpy(loaded.logit_scale)) * loaded.encode_image(images) @ classes.T
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(1, keepdims=True), rtol=1e-4, atol=1e-5)
