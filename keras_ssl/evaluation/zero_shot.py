"""Zero-shot classification with an image-text model: classes are the embeddings of their prompts."""

import keras
import numpy as np
from keras import ops

from keras_ssl.engine import pool_features
from keras_ssl.layers.heads import ZeroShotHead


def zero_shot_classifier(model, class_names, templates=("a photo of a {}.", "a picture of a {}.")):
    """A Keras model mapping images to class probabilities, from an image-text `model`'s text side.

    Each class embedding is the normalised mean of its normalised template
    embeddings (CLIP's prompt ensembling); the logits are
    `logit_scale * cosine` of the projected image features.

    Args:
        model: a trained image-text method (`CLIP`, `SigLIP`, `SLIP`).
        class_names: list of class names.
        templates: format strings with one `{}` (or one string).

    Returns:
        `keras.Model` mapping float images in [0, 1] (or in the model's
        `value_range`) to `(B, classes)` probabilities; it shares the
        model's encoder and projection weights.

    Example:
        >>> from keras_ssl.evaluation.zero_shot import zero_shot_classifier
        >>> tok = keras_ssl.text.Tokenizer(max_length=8).adapt(["a photo of a cat.", "a photo of a dog."])
        >>> clip = keras_ssl.CLIP(encoder, tokenizer=tok, embed_dim=8, text_width=8, text_depth=1, text_heads=2)
        >>> zero_shot_classifier(clip, ["cat", "dog"]).predict(images, verbose=0).shape
        (8, 2)
    """
    templates = [templates] if isinstance(templates, str) else list(templates)
    embeddings = [model.encode_text([t.format(c) for t in templates]).mean(0) for c in class_names]
    classes = np.stack(embeddings)
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    head = ZeroShotHead(classes, float(ops.convert_to_numpy(model.logit_scale)), name="zero_shot_head")
    images = keras.Input(model.image_shape, name="images")
    low, high = model.value_range or (0.0, 1.0)
    x = images if model.value_range is None else (images - low) / (high - low)
    features = pool_features(model.encoder(x, training=False))
    return keras.Model(images, head(model.image_projection(features)), name="zero_shot_classifier")
