"""Text side of CLIP: a tokenizer, a small text Transformer, CIFAR-10 captions.

- `Tokenizer`: lower-case word (or character) tokenizer in pure Python and
  NumPy; texts become fixed-length int32 id arrays outside the model.
- `TextTransformer`: token + position embeddings, pre-norm Transformer
  blocks (causal or bidirectional, padding masked), pooled to `(B, dim)`.
- `cifar10_captions`: captions from CIFAR-10 labels with varied templates and
  synonyms; `EVAL_TEMPLATES` are prompts no training caption uses.
- `check_pair_data`: the `(images, texts)` data of the image-text methods;
  `token_ids` and `text_shape`: the checks of token ids and their sizes.
"""

from keras_ssl.text.captions import (
    CIFAR10_CLASSES,
    CIFAR10_SYNONYMS,
    EVAL_TEMPLATES,
    TRAIN_TEMPLATES,
    cifar10_captions,
)
from keras_ssl.text.encoder import TextBlock, TextTransformer
from keras_ssl.text.pairs import check_pair_data
from keras_ssl.text.tokenizer import (
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    Tokenizer,
    as_texts,
    text_shape,
    token_ids,
)
