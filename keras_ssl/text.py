"""Text side of CLIP: a tokenizer, a small text Transformer, CIFAR-10 captions.

- `Tokenizer`: lower-case word (or character) tokenizer in pure Python and
  NumPy; texts become fixed-length int32 id arrays outside the model.
- `TextTransformer`: token + position embeddings, pre-norm Transformer
  blocks (causal or bidirectional, padding masked), pooled to `(B, dim)`.
- `cifar10_captions`: captions from CIFAR-10 labels with varied templates and
  synonyms; `EVAL_TEMPLATES` are prompts no training caption uses.
- `check_pair_data`: the `(images, texts)` data of the image-text methods.
"""

import re
from collections import Counter

import keras
import numpy as np
from keras import ops

from keras_ssl.data import check_images

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


@keras.saving.register_keras_serializable(package="keras_ssl")
class TextBlock(keras.layers.Layer):
    """Pre-norm Transformer block over tokens with a boolean attention mask.

    Args:
        dim: token size.
        heads: attention heads (must divide `dim`).
        mlp_ratio: MLP width as a multiple of `dim`.

    Example:
        >>> from keras_ssl.text import TextBlock
        >>> block = TextBlock(32, heads=4)
        >>> x = np.random.default_rng(0).normal(size=(2, 5, 32)).astype("float32")  # (B, L, 32)
        >>> mask = np.tril(np.ones((2, 5, 5), bool))  # (B, L, L) bool: query i sees key j (here j <= i)
        >>> tuple(block(x, mask).shape)
        (2, 5, 32)
    """

    def __init__(self, dim, heads, mlp_ratio=4.0, **kwargs):
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"`heads` ({heads}) must divide `dim` ({dim}).")
        self.dim, self.heads, self.mlp_ratio = int(dim), int(heads), float(mlp_ratio)
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-5)
        self.qkv = keras.layers.Dense(3 * self.dim)
        self.proj = keras.layers.Dense(self.dim)
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-5)
        self.fc1 = keras.layers.Dense(int(self.dim * self.mlp_ratio), activation="gelu")
        self.fc2 = keras.layers.Dense(self.dim)

    def build(self, input_shape):
        for layer in (self.norm1, self.qkv, self.proj, self.norm2, self.fc1):
            layer.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.fc1.units,))

    def call(self, x, mask):
        length, head_dim = x.shape[1], self.dim // self.heads
        qkv = ops.reshape(self.qkv(self.norm1(x)), (-1, length, 3, self.heads, head_dim))
        q, k, v = ops.split(qkv, 3, axis=2)
        logits = ops.einsum("bqhd,bkhd->bhqk", q[:, :, 0], k[:, :, 0]) / np.sqrt(head_dim)
        logits = ops.cast(logits, "float32")
        # ops.where, not an additive large negative: that overflows float16 (PITFALLS)
        logits = ops.where(ops.expand_dims(mask, 1), logits, ops.full_like(logits, -np.inf))
        attn = ops.cast(ops.softmax(logits, axis=-1), x.dtype)
        out = ops.reshape(ops.einsum("bhqk,bkhd->bqhd", attn, v[:, :, 0]), (-1, length, self.dim))
        x = x + self.proj(out)
        return x + self.fc2(self.fc1(self.norm2(x)))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "mlp_ratio": self.mlp_ratio}


@keras.saving.register_keras_serializable(package="keras_ssl")
class TextTransformer(keras.Model):
    """Small text Transformer mapping token ids `(B, L)` to features `(B, dim)`.

    Token and learned position embeddings, `depth` pre-norm blocks, a final
    LayerNorm. Padding (id 0) is never attended to. `pooling="eos"` (CLIP)
    takes the features of the last non-pad token, which with `causal=True`
    have seen the whole text; `pooling="mean"` averages non-pad tokens.

    Args:
        vocab_size: number of token ids.
        max_length: longest id sequence.
        dim: token width.
        depth: number of blocks.
        heads: attention heads.
        causal: causal attention (each token sees only earlier ones).
        pooling: `"eos"` or `"mean"`.

    Example:
        >>> from keras_ssl.text import TextTransformer, Tokenizer
        >>> tokenizer = Tokenizer(max_length=16).adapt(["a photo of a cat.", "a picture of a dog."])
        >>> encoder = TextTransformer(vocab_size=tokenizer.vocab_size, max_length=16, dim=32, depth=1, heads=4)
        >>> tuple(encoder(tokenizer(["a photo of a cat."])).shape)
        (1, 32)
    """

    def __init__(self, vocab_size, max_length=16, dim=64, depth=2, heads=4, causal=True, pooling="eos", **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("eos", "mean"):
            raise ValueError(f"`pooling` must be 'eos' or 'mean', got {pooling!r}.")
        self.vocab_size, self.max_length, self.dim = int(vocab_size), int(max_length), int(dim)
        self.depth, self.heads, self.causal, self.pooling = int(depth), int(heads), bool(causal), pooling
        self.token_embedding = keras.layers.Embedding(self.vocab_size, self.dim)
        self.blocks = [TextBlock(self.dim, self.heads) for _ in range(self.depth)]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5)
        self.build((None, self.max_length))

    def build(self, input_shape):
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(self.max_length, self.dim),
            initializer=keras.initializers.RandomNormal(stddev=0.01),
        )
        self.token_embedding.build(input_shape)
        for block in self.blocks:
            block.build((None, None, self.dim))
        self.norm.build((None, None, self.dim))
        self.built = True

    def call(self, tokens, training=False):
        tokens = ops.cast(tokens, "int32")
        length = tokens.shape[1]
        if length is None or length > self.max_length:
            raise ValueError(f"token sequences must have a static length <= {self.max_length}, got {length}.")
        valid = tokens != PAD
        x = self.token_embedding(tokens) + self.position_embedding[:length]
        # Key j is visible when it is not padding; position 0 always is, so
        # no row is fully masked (an all-pad row would give NaN).
        keys = ops.logical_or(valid, ops.arange(length)[None, :] == 0)
        mask = ops.repeat(keys[:, None, :], length, axis=1)
        if self.causal:
            mask = ops.logical_and(mask, ops.tril(ops.ones((length, length), "bool"))[None])
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        weights = ops.cast(valid, x.dtype)
        if self.pooling == "eos":
            last = ops.maximum(ops.sum(ops.cast(valid, "int32"), axis=1) - 1, 0)
            weights = ops.one_hot(last, length, dtype=x.dtype)
        weights = weights / ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1.0)
        return ops.einsum("bl,bld->bd", weights, x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "dim": self.dim,
            "depth": self.depth,
            "heads": self.heads,
            "causal": self.causal,
            "pooling": self.pooling,
        }


# ----------------------------------------------------------- CIFAR-10 demo
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_SYNONYMS = {
    "airplane": ("airplane", "plane", "aircraft", "jet", "airliner"),
    "automobile": ("automobile", "car", "sedan", "vehicle", "auto"),
    "bird": ("bird", "sparrow", "songbird", "finch"),
    "cat": ("cat", "kitten", "kitty", "house cat"),
    "deer": ("deer", "fawn", "stag", "doe"),
    "dog": ("dog", "puppy", "hound", "pup"),
    "frog": ("frog", "toad", "tree frog", "bullfrog"),
    "horse": ("horse", "pony", "stallion", "mare"),
    "ship": ("ship", "boat", "vessel", "cargo ship"),
    "truck": ("truck", "lorry", "pickup truck", "dump truck"),
}
TRAIN_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of the {}.",
    "a blurry photo of a {}.",
    "a small {} in the picture.",
    "a close-up photo of the {}.",
    "there is a {} here.",
    "a low resolution photo of a {}.",
    "the {} in this photo.",
    "a cropped photo of the {}.",
)
#: zero-shot prompts: no training caption uses these templates
EVAL_TEMPLATES = ("this is an image of a {}.", "a photo showing the {}.", "a {} is in this picture.")


def cifar10_captions(labels, seed=0, templates=TRAIN_TEMPLATES, synonyms=CIFAR10_SYNONYMS):
    """One caption per label: a random template filled with a random synonym.

    Args:
        labels: int labels `(N,)` in 0..9.
        seed: seed of the random choices.
        templates: format strings with one `{}`.
        synonyms: class name -> tuple of words for it.

    Returns:
        list of `N` captions.

    Example:
        >>> from keras_ssl.text import cifar10_captions
        >>> cifar10_captions([3, 5], seed=0)
        ['the kitty in this photo.', 'a close-up photo of the puppy.']
    """
    labels = np.asarray(labels).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise ValueError(f"CIFAR-10 labels must lie in 0..9, got [{labels.min()}, {labels.max()}].")
    rng = np.random.default_rng(seed)
    words = [synonyms[c] for c in CIFAR10_CLASSES]
    return [templates[rng.integers(len(templates))].format(words[y][rng.integers(len(words[y]))]) for y in labels]


# ------------------------------------------------- (images, texts) training data
def check_pair_data(model, x, y, batch_size):
    """`fit`'s `(x, y, batch_size)` for an image-text `model`, checked, tokenised (`model.tokenize`).

    Arrays `fit(images, texts)` or `fit((images, texts))` drop the last incomplete
    batch; a `tf.data.Dataset` or `PyDataset` yields `(images, texts)` batches.

    Args:
        model: an image-text method (CLIP, SigLIP, SLIP): its `tokenize`,
            `image_shape`, `value_range` and `image_size` are used.
        x, y, batch_size: as given to `fit`.

    Example:
        >>> model = keras_ssl.CLIP(encoder, vocab_size=9, max_length=4, embed_dim=8, text_width=8)
        >>> keras_ssl.text.check_pair_data(model, images, np.ones((8, 4), "int32"), 3)[0][1].shape  # 2 batches of 3
        (6, 4)
    """
    name = type(model).__name__
    if y is None and isinstance(x, (tuple, list)) and len(x) == 2:
        x, y = x
    if isinstance(x, np.ndarray):
        if y is None:
            raise ValueError(f"{name} trains on (images, texts) pairs: call fit(images, texts).")
        check_images(x, channels=model.image_shape[-1], value_range=model.value_range)
        tokens = model.tokenize(y)
        if len(tokens) != len(x):
            raise ValueError(f"got {len(x)} images but {len(tokens)} texts; they must pair up.")
        batch = min(batch_size or 32, len(x))
        if batch < 2:
            raise ValueError(f"{name} needs batches of at least 2 pairs, got batch_size={batch}.")
        keep = len(x) - len(x) % batch
        return (x[:keep], tokens[:keep]), None, batch_size
    if y is not None:
        raise ValueError("pass (images, texts) arrays, or a dataset yielding (images, texts) batches.")

    def check_batch(images):
        check_images(images, model.image_shape[-1], 2, model.value_range, model.image_size)

    spec = getattr(x, "element_spec", None)
    if spec is not None:
        if not (isinstance(spec, tuple) and len(spec) == 2 and hasattr(spec[0], "shape")):
            raise ValueError(f"the tf.data.Dataset must yield (images, token_ids) batches, got {spec}.")
        images, _ = next(iter(x.take(1)))
        check_batch(np.asarray(images))
        return x.map(lambda images, tokens: ((images, tokens),)), None, None
    if isinstance(x, keras.utils.PyDataset):
        check_batch(np.asarray(x[0][0]))
        return _PairBatches(x, model), None, None
    raise TypeError(f"expected (images, texts) arrays, a tf.data.Dataset or a PyDataset, got {type(x).__name__}.")


class _PairBatches(keras.utils.PyDataset):
    """`(images, texts)` batches as `((images, token_ids),)`."""

    def __init__(self, source, model):
        super().__init__()
        self.source, self.model = source, model

    num_batches = property(lambda self: self.source.num_batches)

    def __getitem__(self, index):
        images, texts = self.source[index]
        tokens = self.model.tokenize(texts)
        if len(tokens) != len(images):
            raise ValueError(f"batch {index} has {len(images)} images but {len(tokens)} texts.")
        return ((np.asarray(images), tokens),)

    def on_epoch_end(self):
        getattr(self.source, "on_epoch_end", lambda: None)()
