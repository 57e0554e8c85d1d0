"""CLIP: image-text training from every input form, logit scale, zero-shot, retrieval, saving."""

import math

import keras
import numpy as np
import pytest
from conftest import random_images, small_encoder, tiny_text_model
from keras import ops
from numpy_refs import clip as numpy_clip

from keras_ssl.evaluation import recall_at_k
from keras_ssl.layers import OneView
from keras_ssl.methods.clip import CLIP
from keras_ssl.text import Tokenizer, cifar10_captions

LABELS = np.arange(16) % 10
CAPTIONS = cifar10_captions(LABELS, seed=0)
TOKENIZER = Tokenizer(max_length=12).adapt(CAPTIONS)


def make_model(encoder=None, **kw):
    kw.setdefault("tokenizer", TOKENIZER)
    return tiny_text_model(CLIP, encoder, **kw)


def weights_of(layer):
    return [np.array(w) for w in layer.get_weights()]


def test_fit_from_numpy_strings_updates_both_towers():
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before_i, before_t = weights_of(model.encoder), weights_of(model.text_encoder)
    history = model.fit(random_images(17), CAPTIONS + CAPTIONS[:1], batch_size=8, epochs=2, verbose=0)
    loss = history.history["loss"]
    # symmetric CE over 8 pairs at scale s: at most log(8) + 2s
    assert np.all(np.isfinite(loss)) and 0 < loss[0] < math.log(8) + 2 / 0.07
    assert abs(history.history["logit_scale"][0] - 1 / 0.07) < 0.1
    for before, layer in ((before_i, model.encoder), (before_t, model.text_encoder)):
        assert any(np.abs(a - b).max() > 0 for a, b in zip(before, weights_of(layer)))


def test_fit_from_tuple_tf_data_and_pydataset():
    import tensorflow as tf

    images, tokens = random_images(16), TOKENIZER(CAPTIONS)
    model = make_model()
    model.compile(optimizer="adam")
    assert np.isfinite(model.fit((images, tokens), batch_size=8, verbose=0).history["loss"][0])
    dataset = tf.data.Dataset.from_tensor_slices((images, tokens)).batch(8)
    assert np.isfinite(model.fit(dataset, epochs=1, verbose=0).history["loss"][0])

    class Pairs(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return images[8 * i : 8 * i + 8], CAPTIONS[8 * i : 8 * i + 8]

    history = model.fit(Pairs(), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(model.optimizer.iterations) == 6
    result = model.evaluate(images, CAPTIONS, batch_size=8, verbose=0, return_dict=True)
    assert np.isfinite(result["loss"])


def test_logit_scale_starts_at_inverse_temperature_and_is_clamped():
    model = make_model()
    np.testing.assert_allclose(float(ops.convert_to_numpy(model.logit_scale)), 1 / 0.07, rtol=1e-5)
    model.log_logit_scale.assign(math.log(500.0))
    np.testing.assert_allclose(float(ops.convert_to_numpy(model.logit_scale)), 100.0, rtol=1e-5)
    model.log_logit_scale.assign(math.log(50.0))
    np.testing.assert_allclose(float(ops.convert_to_numpy(model.logit_scale)), 50.0, rtol=1e-5)
    assert model.log_logit_scale.trainable


def test_numpy_clip_reference_on_a_hand_case():
    # Images [2, 0], [5, 0] (both e1 once normalised), texts e1, e2, scale 1:
    # logits [[1, 0], [1, 0]]. Image -> text: -ln(e / (e + 1)) and -ln(1 / (e + 1)), mean
    # ln(1 + e) - 1/2. Text -> image: logits^T = [[1, 1], [0, 0]], ln 2 for both rows.
    got = numpy_clip([[2.0, 0.0], [5.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], 1.0)
    np.testing.assert_allclose(got, (np.log(1 + np.e) - 0.5 + np.log(2)) / 2, rtol=1e-12)
    # Matched orthogonal pairs at scale s: every row is -ln(e^s / (e^s + 1)) = ln(1 + e^-s).
    np.testing.assert_allclose(numpy_clip(np.eye(2), np.eye(2), 3.0), np.log1p(np.exp(-3.0)), rtol=1e-12)


def test_loss_is_clip_of_its_own_forward():
    model = make_model()
    model.log_logit_scale.assign(math.log(20.0))
    x = (random_images(8), TOKENIZER(CAPTIONS[:8]))
    out = model(x, training=True)
    got = model.compute_loss(x, None, out, None, training=True)
    expected = numpy_clip(ops.convert_to_numpy(out["z1"]), ops.convert_to_numpy(out["text"]), 20.0)
    np.testing.assert_allclose(ops.convert_to_numpy(got), expected, rtol=1e-5)


def toy_problem(n=32, seed=0):
    """Red images are 'red things', blue ones 'blue things'."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.uniform(0.0, 0.3, (n, 16, 16, 3)).astype("float32")
    images[labels == 0, ..., 0] += 0.7
    images[labels == 1, ..., 2] += 0.7
    templates = ("a photo of a {} thing.", "an image of the {} thing.")
    captions = [templates[i % 2].format(("red", "blue")[y]) for i, y in enumerate(labels)]
    return images, labels, captions


def test_zero_shot_classifier_gives_probabilities_and_learns_a_toy_problem():
    images, labels, captions = toy_problem()
    # a hand-built encoder of the mean colour: the toy problem is linearly separable
    encoder = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(8)])
    tokenizer = Tokenizer(max_length=10).adapt(captions)
    model = make_model(encoder, tokenizer=tokenizer, views=OneView(keras.layers.Identity()))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(images, captions, batch_size=8, epochs=12, verbose=0)
    # with 2 classes in a batch of 8, the best possible loss is log(4)
    assert history.history["loss"][-1] < 1.6
    # a prompt the model never saw
    classifier = model.zero_shot_classifier(["red", "blue"], templates=("a {} thing.",))
    probabilities = classifier.predict(images, verbose=0)
    assert probabilities.shape == (32, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities.argmax(axis=1) == labels).mean() >= 0.9
    recall = model.retrieval_recall(images, captions, ks=(1,), labels=labels)
    assert recall["image_to_text@1"] >= 0.9


def test_recall_at_k_against_hand_cases():
    e = np.random.default_rng(0).normal(size=(6, 4))
    assert recall_at_k(e, e, ks=(1, 5)) == {
        "image_to_text@1": 1.0,
        "image_to_text@5": 1.0,
        "text_to_image@1": 1.0,
        "text_to_image@5": 1.0,
    }
    # texts rotated by one: image i's nearest text is text i-1, so no exact hit at k=1
    images = np.eye(4)
    texts = np.roll(np.eye(4), 1, axis=0)
    r = recall_at_k(images, texts, ks=(1, 4))
    assert r["image_to_text@1"] == 0.0 and r["image_to_text@4"] == 1.0
    # ... but a hit when pairs i and i-1 share a label
    r = recall_at_k(images, texts, ks=(1,), labels=[0, 0, 0, 0])
    assert r["text_to_image@1"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        recall_at_k(np.eye(4), np.eye(3))


def test_whole_model_saves_and_loads_with_tokenizer(tmp_path):
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    images = random_images(16)
    model.fit(images, CAPTIONS, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "clip.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, CLIP) and loaded.tokenizer.vocabulary == TOKENIZER.vocabulary
    np.testing.assert_allclose(loaded.encode_text(CAPTIONS), model.encode_text(CAPTIONS), atol=1e-5)
    np.testing.assert_allclose(loaded.encode_image(images), model.encode_image(images), atol=1e-5)
    np.testing.assert_allclose(
        float(ops.convert_to_numpy(loaded.logit_scale)), float(ops.convert_to_numpy(model.logit_scale)), rtol=1e-6
    )
    history = loaded.fit(images, CAPTIONS, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and int(loaded.optimizer.iterations) == 4


@pytest.mark.parametrize(
    "x, y, match",
    [
        (random_images(16), CAPTIONS[:12], "16 images but 12 texts"),
        (random_images(16), None, "pairs"),
        (random_images(16), np.full((16, 12), 999, "int32"), "token ids"),
        (random_images(16), np.zeros((16, 20), "int32"), "token ids"),
        (np.zeros((16, 16, 16), "uint8"), CAPTIONS, "rank 4"),
    ],
)
def test_bad_inputs_are_rejected(x, y, match):
    model = make_model()
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, batch_size=8, verbose=0)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="temperature"):
        make_model(temperature=0.0)
    with pytest.raises(ValueError, match="max_logit_scale"):
        make_model(max_logit_scale=5.0)
    with pytest.raises(ValueError, match="tokenizer"):
        CLIP(small_encoder())
    with pytest.raises(ValueError, match="tokenizer"):
        CLIP(small_encoder(), vocab_size=50, max_length=8).tokenize(["x"])


def test_zero_shot_head_is_scaled_cosine_softmax_and_round_trips():
    from keras_ssl.layers import ZeroShotHead

    rng = np.random.default_rng(0)
    classes = rng.normal(size=(3, 8)).astype("float32")
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    x = rng.normal(size=(4, 8)).astype("float32") * 5.0
    logits = 10.0 * (x / np.linalg.norm(x, axis=1, keepdims=True)) @ classes.T
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    head = ZeroShotHead(classes, 10.0)
    np.testing.assert_allclose(ops.convert_to_numpy(head(x)), expected, rtol=1e-5, atol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    np.testing.assert_allclose(ops.convert_to_numpy(clone(x)), expected, rtol=1e-5, atol=1e-6)
