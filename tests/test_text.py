"""Tokenizer, TextTransformer and the CIFAR-10 caption builder."""

import keras
import numpy as np
import pytest

from keras_ssl.text import (
    BOS,
    CIFAR10_CLASSES,
    CIFAR10_SYNONYMS,
    EOS,
    EVAL_TEMPLATES,
    PAD,
    TRAIN_TEMPLATES,
    UNK,
    TextTransformer,
    Tokenizer,
    cifar10_captions,
)


def test_tokenizer_ids_padding_and_round_trip():
    tok = Tokenizer(max_length=8).adapt(["a cat, a dog.", "A cat"])
    # frequency order: a (3), cat (2), then ',' '.' 'dog' (1, sorted)
    assert tok.vocabulary == ["a", "cat", ",", ".", "dog"]
    ids = tok(["a Cat.", "zebra"])
    assert ids.dtype == np.int32 and ids.shape == (2, 8)
    np.testing.assert_array_equal(ids[0], [BOS, 4, 5, 7, EOS, PAD, PAD, PAD])
    np.testing.assert_array_equal(ids[1], [BOS, UNK, EOS, PAD, PAD, PAD, PAD, PAD])
    assert tok.decode(ids) == ["a cat .", "<unk>"]
    assert tok.vocab_size == 4 + 5


def test_tokenizer_truncates_keeping_eos_and_char_level():
    tok = Tokenizer(max_length=4).adapt(["a b c d e"])
    np.testing.assert_array_equal(tok("a b c d e")[0], [BOS, 4, 5, EOS])
    chars = Tokenizer(max_length=6, level="char").adapt(["ab"])
    assert chars.decode(chars(["ba"])) == ["ba"]


def test_tokenizer_config_and_serialization_keep_vocabulary():
    tok = Tokenizer(max_length=10).adapt(["a photo of a cat."])
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(tok))
    assert again.vocabulary == tok.vocabulary and again.max_length == 10
    np.testing.assert_array_equal(again(["a cat"]), tok(["a cat"]))


def test_tokenizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="level"):
        Tokenizer(level="byte")
    with pytest.raises(ValueError, match="max_length"):
        Tokenizer(max_length=2)
    with pytest.raises(ValueError, match="special"):
        Tokenizer(vocabulary=["<pad>"])
    with pytest.raises(TypeError, match="string"):
        Tokenizer()([1, 2])


@pytest.mark.parametrize("pooling, causal", [("eos", True), ("mean", False)])
def test_text_transformer_ignores_padding(pooling, causal):
    model = TextTransformer(vocab_size=20, max_length=8, dim=16, depth=1, heads=2, causal=causal, pooling=pooling)
    short = np.array([[BOS, 5, 6, 7, EOS]], "int32")
    padded = np.concatenate([short, np.zeros((1, 3), "int32")], axis=1)
    out_short = keras.ops.convert_to_numpy(model(short))
    out_padded = keras.ops.convert_to_numpy(model(padded))
    assert out_padded.shape == (1, 16)
    np.testing.assert_allclose(out_padded, out_short, atol=1e-5)
    # and the content matters
    other = keras.ops.convert_to_numpy(model(np.array([[BOS, 8, 6, 7, EOS, 0, 0, 0]], "int32")))
    assert np.abs(other - out_padded).max() > 1e-4


def test_text_transformer_saves_and_loads(tmp_path):
    model = TextTransformer(vocab_size=20, max_length=8, dim=16, depth=1, heads=2)
    x = np.array([[BOS, 5, 6, EOS, 0, 0, 0, 0]], "int32")
    path = str(tmp_path / "text.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6)
    with pytest.raises(ValueError, match="length"):
        model(np.zeros((1, 9), "int32"))
    with pytest.raises(ValueError, match="heads"):
        TextTransformer(vocab_size=20, dim=10, heads=3)


def test_cifar10_captions_name_the_class_with_varied_templates():
    labels = np.arange(200) % 10
    captions = cifar10_captions(labels, seed=3)
    assert captions == cifar10_captions(labels, seed=3)
    assert captions != cifar10_captions(labels, seed=4)
    for y, caption in zip(labels, captions):
        assert any(word in caption for word in CIFAR10_SYNONYMS[CIFAR10_CLASSES[y]])
    used = {t for t in TRAIN_TEMPLATES if any(c.startswith(t.split("{}")[0]) for c in captions)}
    assert len(used) > 5
    assert not set(EVAL_TEMPLATES) & set(TRAIN_TEMPLATES)
    with pytest.raises(ValueError, match="0..9"):
        cifar10_captions([10])
