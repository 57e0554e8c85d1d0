"""CLIP (Radford et al. 2021): contrastive image-text pre-training."""

import math

import keras
import numpy as np
from keras import ops

from keras_ssl import losses
from keras_ssl.data import check_images
from keras_ssl.engine import SSLModel, pool_features
from keras_ssl.evaluation import recall_at_k, zero_shot_classifier
from keras_ssl.text import TextTransformer, check_pair_data, text_shape, token_ids
from keras_ssl.views.recipes import clip_view


@keras.saving.register_keras_serializable(package="keras_ssl")
class CLIP(SSLModel):
    """CLIP: images and their captions meet in a shared embedding space.

    An image encoder and a text Transformer, each followed by a linear
    projection to `embed_dim`; the loss is the symmetric cross-entropy over
    the `B x B` cosine similarities scaled by a learned `logit_scale`
    (initialised to `1 / temperature`, clamped at `max_logit_scale`).
    Texts take the place of labels: `fit(images, texts)` with arrays, or a
    `tf.data` / `PyDataset` yielding `(images, texts)` batches. Texts are
    strings (tokenised by `tokenizer`, in NumPy) or int token ids `(N, L)`.
    `predict((images, token_ids))` returns unit embeddings `{"image", "text"}`;
    `encode_image` / `encode_text` embed one side.

    Args:
        encoder: image backbone mapping images in [0, 1] to `(B, D)`.
        text_encoder: model mapping int ids `(B, L)` to `(B, D_t)`; defaults
            to a `TextTransformer(vocab_size, max_length, text_width,
            text_depth, text_heads)`.
        tokenizer: a `keras_ssl.text.Tokenizer` (saved with the model);
            needed for string texts and `zero_shot_classifier`.
        embed_dim: size of the shared space (paper: 512 to 1024; 64 suits
            the small encoders and captions this library trains from scratch).
        vocab_size, max_length: of the token ids; default to the tokenizer's.
        text_width, text_depth, text_heads: default text encoder's size
            (paper: 512 wide, 12 blocks, 8 heads).
        temperature: initial temperature (logit scale `1 / temperature`).
        max_logit_scale: clamp of the logit scale (CLIP: 100).
        views: a `OneView` of the images; defaults to `crop_view` with a
            light crop (scale 0.5-1) and a flip. Pass
            `OneView(keras.layers.Identity())` for none.
        **kwargs: `SSLModel` options (`value_range`, `seed`, ...).

    Example:
        >>> names = ["cat", "dog", "ship", "truck"]
        >>> captions = [f"a photo of a {names[label]}." for label in y_train]
        >>> tok = keras_ssl.text.Tokenizer(max_length=8).adapt(captions)
        >>> encoder = keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8)
        >>> model = keras_ssl.CLIP(encoder, tokenizer=tok, embed_dim=16, text_width=16, text_depth=1, text_heads=2)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, captions, batch_size=16, epochs=1, verbose=0)
        >>> sorted(history.history)
        ['logit_scale', 'loss', 'z_std']
        >>> model.encode_text(["a photo of a cat.", "a photo of a dog."]).shape
        (2, 16)
        >>> classifier = model.zero_shot_classifier(["cat", "dog"])
        >>> probabilities = classifier.predict(x_test / 255.0, verbose=0)   # float images in [0, 1]
        >>> probabilities.shape, bool(np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5))
        ((32, 2), True)
    """

    global_views = 1
    view_recipe = staticmethod(clip_view)
    gathered_outputs = ("z1", "text")
    monitored_output = "z1"
    loss_terms = ("logit_scale",)

    def __init__(
        self,
        encoder,
        text_encoder=None,
        *,
        tokenizer=None,
        embed_dim=64,
        vocab_size=None,
        max_length=None,
        text_width=64,
        text_depth=2,
        text_heads=4,
        temperature=0.07,
        max_logit_scale=100.0,
        **kwargs,
    ):
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        if not max_logit_scale >= 1.0 / temperature:
            raise ValueError(f"`max_logit_scale` ({max_logit_scale}) must be >= 1 / temperature.")
        tokenizer, vocab_size, max_length = text_shape(tokenizer, vocab_size, max_length)
        super().__init__(encoder, **kwargs)
        self.tokenizer = tokenizer
        self.vocab_size, self.max_length, self.embed_dim = vocab_size, max_length, int(embed_dim)
        self.text_width, self.text_depth, self.text_heads = text_width, text_depth, text_heads
        self.temperature, self.max_logit_scale = float(temperature), float(max_logit_scale)
        self.text_encoder = text_encoder or TextTransformer(
            self.vocab_size, self.max_length, text_width, text_depth, text_heads, name="text_encoder"
        )
        text_spec = self.text_encoder.compute_output_spec(keras.KerasTensor((2, self.max_length), dtype="int32"))
        self.image_projection = keras.layers.Dense(embed_dim, use_bias=False, name="image_projection")
        self.text_projection = keras.layers.Dense(embed_dim, use_bias=False, name="text_projection")
        self.image_projection.build((None, self.feature_dim))
        self.text_projection.build((None, int(text_spec.shape[-1])))
        # log of the scale, as CLIP learns it
        initial = keras.initializers.Constant(math.log(1.0 / temperature))
        self.log_logit_scale = self.add_weight(name="log_logit_scale", shape=(), initializer=initial)

    @property
    def logit_scale(self):
        """`exp(log_logit_scale)` clamped at `max_logit_scale` (a scalar tensor)."""
        return ops.exp(ops.minimum(self.log_logit_scale, math.log(self.max_logit_scale)))

    # ------------------------------------------------------------ engine
    def ssl_forward(self, views, tokens, training):
        (h,) = self.encode(views, training)
        t = self.text_encoder(ops.cast(tokens, "int32"), training=training)
        return {"z1": self.image_projection(h), "text": self.text_projection(t)}

    def compute_ssl_loss(self, outputs):
        return self.image_text_loss(outputs["z1"], outputs["text"])

    def image_text_loss(self, image, text):
        """The loss of image and text embeddings `(B, embed_dim)` and its logged terms (SigLIP swaps it)."""
        scale = self.logit_scale
        return losses.clip(image, text, scale), {"logit_scale": scale}

    def call(self, inputs, training=False):
        if training:
            return super().call(inputs, training=True)
        images, tokens = inputs
        return {
            "image": self._embed_images(self.preprocess(images)),
            "text": self._embed_tokens(ops.cast(tokens, "int32")),
        }

    def build_inputs(self):
        return (ops.zeros((2,) + self.image_shape), ops.zeros((2, self.max_length), "int32"))

    def _embed_images(self, images):
        return losses.l2_normalize(self.image_projection(pool_features(self.encoder(images, training=False))))

    def _embed_tokens(self, tokens):
        return losses.l2_normalize(self.text_projection(self.text_encoder(tokens, training=False)))

    # -------------------------------------------------------------- data
    def tokenize(self, texts):
        """int32 token ids `(N, max_length)` of strings (or checked ids)."""
        return token_ids(texts, self.tokenizer, self.vocab_size, self.max_length, type(self).__name__)

    def check_fit_data(self, x, y, batch_size):
        return check_pair_data(self, x, y, batch_size)

    # ------------------------------------------------------- inference
    def encode_image(self, images, batch_size=256):
        """L2-normalised image embeddings `(N, embed_dim)` as NumPy."""
        check_images(images, channels=self.image_shape[-1], value_range=self.value_range)
        return _batched(lambda b: self._embed_images(self.preprocess(b)), images, batch_size)

    def encode_text(self, texts, batch_size=256):
        """L2-normalised text embeddings `(N, embed_dim)` of strings or token ids."""
        return _batched(self._embed_tokens, self.tokenize(texts), batch_size)

    def zero_shot_classifier(self, class_names, templates=("a photo of a {}.", "a picture of a {}.")):
        """Images -> class probabilities from prompts (`keras_ssl.evaluation.zero_shot_classifier`)."""
        return zero_shot_classifier(self, class_names, templates)

    def retrieval_recall(self, images, texts, ks=(1, 5), labels=None, batch_size=256):
        """Image->text and text->image recall@k of the pairs `(images[i], texts[i])`.

        With `labels`, a retrieved item counts when it has the query's label
        (class-level recall), else only the exact pair counts.
        """
        return recall_at_k(self.encode_image(images, batch_size), self.encode_text(texts, batch_size), ks, labels)


def _batched(fn, x, batch_size):
    batches = [fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate([ops.convert_to_numpy(b) for b in batches])
