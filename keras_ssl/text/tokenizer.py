"""A lower-case word (or character) tokenizer in pure Python and NumPy, and the checks of token ids."""

import re
from collections import Counter

import keras
import numpy as np

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


@keras.saving.register_keras_serializable(package="keras_ssl")
class Tokenizer:
    """Lower-case word or character tokenizer with a vocabulary from a corpus.

    Ids: 0 pad, 1 unknown, 2 begin, 3 end, then the vocabulary. Each text
    becomes `[BOS, tokens..., EOS, PAD...]` of exactly `max_length` ids
    (long texts are truncated, keeping EOS). The vocabulary is part of the
    config, so a model saving its tokenizer saves it too.

    Args:
        vocabulary: list of tokens (without the special ones), or None to
            build it later with `adapt`.
        max_length: length of every id sequence (>= 3).
        level: `"word"` (words and punctuation marks) or `"char"`.

    Example:
        >>> from keras_ssl.text import Tokenizer
        >>> tok = Tokenizer(max_length=8).adapt(["a photo of a cat.", "a dog"])
        >>> tok(["a cat"])
        array([[2, 4, 6, 3, 0, 0, 0, 0]], dtype=int32)
        >>> tok.decode(tok(["a cat"]))
        ['a cat']
    """

    def __init__(self, vocabulary=None, max_length=16, level="word"):
        if level not in ("word", "char"):
            raise ValueError(f"`level` must be 'word' or 'char', got {level!r}.")
        if int(max_length) < 3:
            raise ValueError(f"`max_length` must be >= 3 (BOS, a token, EOS), got {max_length}.")
        self.max_length = int(max_length)
        self.level = level
        self.set_vocabulary(vocabulary or [])

    def set_vocabulary(self, vocabulary):
        """Replaces the vocabulary (a list of tokens, no special ones)."""
        vocabulary = [str(t) for t in vocabulary]
        clash = set(vocabulary) & set(SPECIAL_TOKENS)
        if clash or len(set(vocabulary)) != len(vocabulary):
            raise ValueError(f"the vocabulary must be unique and hold no special tokens ({clash}).")
        self.vocabulary = vocabulary
        self._ids = {t: i + len(SPECIAL_TOKENS) for i, t in enumerate(vocabulary)}

    @property
    def vocab_size(self):
        """Number of ids, special tokens included."""
        return len(SPECIAL_TOKENS) + len(self.vocabulary)

    def split(self, text):
        """The tokens of one text (lower-cased)."""
        text = str(text).lower()
        return list(text) if self.level == "char" else _WORD.findall(text)

    def adapt(self, texts, max_vocab=None, min_count=1):
        """Builds the vocabulary from `texts` (most frequent first); returns self."""
        counts = Counter(t for text in as_texts(texts) for t in self.split(text))
        ranked = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        self.set_vocabulary(ranked[:max_vocab])
        return self

    def __call__(self, texts):
        """Token ids `(N, max_length)` int32 of a string or a list of strings."""
        texts = as_texts(texts)
        ids = np.full((len(texts), self.max_length), PAD, "int32")
        for row, text in enumerate(texts):
            tokens = [self._ids.get(t, UNK) for t in self.split(text)][: self.max_length - 2]
            ids[row, : len(tokens) + 2] = [BOS, *tokens, EOS]
        return ids

    def decode(self, ids):
        """Texts of an id array (special tokens dropped)."""
        words = list(SPECIAL_TOKENS) + self.vocabulary
        sep = "" if self.level == "char" else " "
        return [
            sep.join(words[i] if i != UNK else "<unk>" for i in row if i not in (PAD, BOS, EOS))
            for row in np.asarray(ids)
        ]

    def get_config(self):
        return {"vocabulary": list(self.vocabulary), "max_length": self.max_length, "level": self.level}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def as_texts(texts):
    """A list of strings from a string, a list of strings or a NumPy string array.

    Example:
        >>> from keras_ssl.text import as_texts
        >>> as_texts("a cat")
        ['a cat']
        >>> as_texts(("a cat", "a dog"))
        ['a cat', 'a dog']
    """
    if isinstance(texts, str):
        return [texts]
    texts = list(np.asarray(texts).reshape(-1)) if isinstance(texts, np.ndarray) else list(texts)
    if not all(isinstance(t, (str, np.str_)) for t in texts):
        raise TypeError("expected a string or a list of strings.")
    return texts


def token_ids(texts, tokenizer, vocab_size, max_length, owner="this model"):
    """int32 token ids `(N, max_length)` of strings (with `tokenizer`), or int ids checked against the model.

    Args:
        texts: a string, a list or array of strings, or int ids `(N, L)`.
        tokenizer: a `Tokenizer`, or None (then only ids are accepted).
        vocab_size, max_length: the model's; ids must lie in `[0, vocab_size)`
            and be at most `max_length` long.
        owner: the model's name, for the error messages.

    Example:
        >>> from keras_ssl.text import Tokenizer, token_ids
        >>> tok = Tokenizer(max_length=4).adapt(["a cat", "a dog"])
        >>> token_ids(["a cat"], tok, tok.vocab_size, 4).tolist()
        [[2, 4, 5, 3]]
    """
    if isinstance(texts, np.ndarray) and texts.dtype.kind in "iu":
        if texts.ndim != 2 or texts.shape[1] > max_length:
            raise ValueError(f"token ids must be (N, L<={max_length}), got {texts.shape}.")
        if texts.min() < 0 or texts.max() >= vocab_size:
            raise ValueError(f"token ids must lie in [0, {vocab_size}).")
        return texts.astype("int32")
    if tokenizer is None:
        raise ValueError(f"string texts need {owner}(tokenizer=...); or pass token ids.")
    return tokenizer(as_texts(texts))


def text_shape(tokenizer=None, vocab_size=None, max_length=None):
    """`(vocab_size, max_length)` of a model's token ids: the ones given, else the tokenizer's.

    Args:
        tokenizer: a `Tokenizer` (or its config dict), or None.
        vocab_size, max_length: explicit sizes; at least the tokenizer's.

    Returns:
        `(tokenizer, vocab_size, max_length)`, the tokenizer deserialised.

    Example:
        >>> from keras_ssl.text import Tokenizer, text_shape
        >>> tok = Tokenizer(max_length=8).adapt(["a cat"])
        >>> text_shape(tok)[1:]
        (6, 8)
    """
    if isinstance(tokenizer, dict):
        tokenizer = keras.saving.deserialize_keras_object(tokenizer)
    vocab_size = vocab_size or (tokenizer and tokenizer.vocab_size)
    max_length = max_length or (tokenizer and tokenizer.max_length)
    if not vocab_size or not max_length:
        raise ValueError("pass a `tokenizer`, or `vocab_size` and `max_length` of the token ids.")
    if tokenizer is not None and (tokenizer.vocab_size > vocab_size or tokenizer.max_length > max_length):
        raise ValueError("the tokenizer's vocab_size/max_length exceed the model's.")
    return tokenizer, int(vocab_size), int(max_length)
