"""SigLIP (Zhai et al. 2023): CLIP with a pairwise sigmoid loss and a learned bias."""

import keras
from keras import ops

from keras_ssl.losses.sigmoid import siglip
from keras_ssl.methods.clip import CLIP


@keras.saving.register_keras_serializable(package="keras_ssl")
class SigLIP(CLIP):
    """SigLIP: CLIP's two towers trained with the sigmoid loss.

    Every image-text pair of the batch is its own binary problem, matched
    or not: `-(1/B) sum_ij log sigmoid(z_ij (t <x_i, y_j> + b))` with
    `z_ij = +1` on the diagonal and `-1` elsewhere
    (`keras_ssl.losses.sigmoid.siglip`). The temperature `t = exp(t')` is
    learned from `t' = log(1 / temperature)` (the paper: `log 10`) and the
    bias `b` from `initial_bias` (-10): with `B - 1` negatives per positive
    the loss starts near its prior instead of far above it. No softmax
    couples the batch, so the texts can be visited in chunks (`chunk_size`)
    and, on JAX under `keras_ssl.distribute.data_parallel()`, round a ring
    of devices (each sees its images against one other device's texts at a
    time). Under TensorFlow's `MirroredStrategy` the loss runs on the texts
    `SSLModel` gathered from every replica (the same value). Encoders,
    tokenizer, data, `encode_image`/`encode_text`, retrieval and
    `zero_shot_classifier` (a softmax over `t * cosine`; its argmax is the
    sigmoid's) are CLIP's.

    Args:
        encoder, text_encoder: as `CLIP`.
        temperature: initial temperature, `t = 1 / temperature` (paper: 0.1).
        initial_bias: initial `b` (paper: -10).
        max_logit_scale: clamp of `t` (kept from CLIP; the paper has none).
        chunk_size: texts per chunk of the loss (memory `B x chunk_size`);
            `None`: the whole batch at once.
        **kwargs: `CLIP` options (`tokenizer`, `embed_dim`, text sizes,
            `views`) and `SSLModel` options.

    Example:
        >>> from keras_ssl.methods.siglip import SigLIP
        >>> captions = [f"a photo of a {['cat', 'dog'][label % 2]}." for label in y_train]
        >>> tok = keras_ssl.text.Tokenizer(max_length=8).adapt(captions)
        >>> model = SigLIP(encoder, tokenizer=tok, embed_dim=16, text_width=16, text_depth=1, text_heads=2, chunk_size=4)
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
        >>> history = model.fit(x_train, captions, batch_size=16, epochs=1, verbose=0)
        >>> sorted(history.history)
        ['logit_bias', 'logit_scale', 'loss', 'z_std']
        >>> model.zero_shot_classifier(["cat", "dog"]).predict(x_test / 255.0, verbose=0).shape
        (32, 2)
    """

    loss_terms = ("logit_scale", "logit_bias")

    def __init__(
        self,
        encoder,
        text_encoder=None,
        *,
        temperature=0.1,
        initial_bias=-10.0,
        max_logit_scale=100.0,
        chunk_size=None,
        **kwargs,
    ):
        if chunk_size is not None and not int(chunk_size) >= 1:
            raise ValueError(f"`chunk_size` must be a positive integer or None, got {chunk_size}.")
        super().__init__(encoder, text_encoder, temperature=temperature, max_logit_scale=max_logit_scale, **kwargs)
        self.initial_bias = float(initial_bias)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.logit_bias = self.add_weight(
            name="logit_bias", shape=(), initializer=keras.initializers.Constant(self.initial_bias)
        )

    def image_text_loss(self, image, text):
        scale, bias = self.logit_scale, self.logit_bias
        loss = siglip(image, text, scale, bias, chunk_size=self.chunk_size)
        return loss, {"logit_scale": scale, "logit_bias": ops.convert_to_tensor(bias)}
