"""Structural copies of any encoder: for momentum targets and fine-tuning."""

import keras

from keras_ssl import backend, keras_compat
from keras_ssl.layers.conv import Conv2D
from keras_ssl.layers.normalization import BatchNormalization

# keras_ssl's subclasses that only compute Keras's layer faster: same config and weights.
_FASTER = {BatchNormalization: keras.layers.BatchNormalization, Conv2D: keras.layers.Conv2D}


def clone_model(model, input_shape=None, copy_weights=True):
    """A copy of `model` with its own variables, built, weights equal.

    Works for functional and Sequential models, subclassed models whose
    constructor arguments make their config (Keras records them), models
    with `Lambda` layers (the copy is made in this process from the code
    already loaded, so Keras's safe mode, meant for files, is lifted for
    it) and keras-hub backbones. It tries, in order: rebuilding the whole
    model from its config (the model's own `from_config`), then
    `keras.models.clone_model` (layer by layer). When neither gives the same
    variables, the error names the layer that cannot be rebuilt.

    Args:
        model: a `keras.Model` or layer, built (called once).
        input_shape: `(H, W, C)` to build a subclassed copy with, when the
            model's own input shape has unknown sizes.
        copy_weights: start the copy with `model`'s weights.

    Returns:
        The copy.

    Example:
        >>> target = keras_ssl.backbones.clone_model(encoder, input_shape=(16, 16, 3))
        >>> target is encoder, len(target.weights) == len(encoder.weights)
        (False, True)
        >>> all(np.array_equal(a, b) for a, b in zip(target.get_weights(), encoder.get_weights()))
        True
    """
    failures = []
    for copy in (_from_config, _layer_by_layer):
        try:
            clone = copy(model)
            _build_like(clone, model, input_shape)
            _check_same_variables(model, clone)
        except Exception as e:  # each way fails differently; the error below names the layer
            failures.append(f"{copy.__doc__.strip()}: {type(e).__name__}: {_short(e)}")
            continue
        if copy_weights:
            clone.set_weights(model.get_weights())
        return clone
    raise ValueError(
        f"cannot copy {type(model).__name__} {model.name!r} (momentum targets and fine-tuning need "
        f"a copy): {_blame(model)}\nTried:\n  " + "\n  ".join(failures)
    )


def plain_keras(model):
    """The same model with keras_ssl's `BatchNormalization` and `Conv2D` layers as Keras's own.

    keras_ssl's backbones and heads train with `keras_ssl.layers.BatchNormalization`
    and `Conv2D` (Keras's layers computed by faster kernels), so their saved
    files load once keras_ssl is imported. This copy has the same config, weights
    and outputs in Keras's layer, so its file loads with
    `keras.saving.load_model` where keras_ssl is not installed. Nested
    functional and Sequential models are copied through.

    Args:
        model: a built functional or Sequential model.

    Returns:
        The copy (its own variables, weights equal), or `model` itself when
        it holds neither.

    Example:
        >>> plain = keras_ssl.backbones.plain_keras(encoder)
        >>> type(encoder.get_layer("block1_bn")).__module__
        'keras_ssl.layers.normalization'
        >>> type(plain.get_layer("block1_bn")) is keras.layers.BatchNormalization
        True
        >>> bool(ops.all(ops.isclose(plain(images), encoder(images), atol=1e-5)))   # the same outputs
        True
        >>> plain.save("encoder.keras")   # loads where keras_ssl is not installed
    """
    if not any(type(l) in _FASTER for l in keras_compat.sublayers(model)):
        return model
    if not keras_compat.is_functional(model):
        raise TypeError(
            f"plain_keras takes a functional or Sequential model, got {type(model).__name__} "
            f"{model.name!r}; a subclassed model's layers are its own code."
        )

    def swap(layer):
        return _FASTER.get(type(layer), type(layer)).from_config(layer.get_config())

    with keras_compat.unsafe_deserialization(), keras.saving.custom_object_scope(_classes(model)):
        copy = keras.models.clone_model(model, clone_function=swap, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def _from_config(model):
    """from its config"""
    config = keras.saving.serialize_keras_object(model)
    return keras.saving.deserialize_keras_object(config, custom_objects=_classes(model), safe_mode=False)


def _layer_by_layer(model):
    """keras.models.clone_model"""
    if not keras_compat.is_functional(model):
        raise TypeError("not a functional or Sequential model")
    with keras_compat.unsafe_deserialization(), keras.saving.custom_object_scope(_classes(model)):
        return keras.models.clone_model(model)


def _classes(model):
    # The classes in use are all at hand, registered with Keras or not.
    return {keras.saving.get_registered_name(type(l)): type(l) for l in keras_compat.sublayers(model)}


def _build_like(clone, model, input_shape):
    if clone.built and len(clone.weights) == len(model.weights):
        return
    built = keras_compat.built_input_shape(model)
    if built is not None and None not in tuple(built)[1:]:
        try:  # a layer with its own `build` needs no forward
            clone.build(built)
        except Exception:  # a subclassed model without one: the traced call below
            pass
        if len(clone.weights) == len(model.weights):
            return
    shape = tuple(built[1:]) if built is not None else None
    if shape is None or None in shape:
        shape = tuple(input_shape) if input_shape is not None else shape
    if shape is None or None in shape:
        raise ValueError(f"cannot tell the input shape to build the copy with (got {shape}); pass input_shape")
    # A subclassed model creates its variables on its first call; traced, not run, on JAX.
    backend.build_forward(lambda x: clone(x, training=False), keras.ops.zeros((1,) + tuple(int(d) for d in shape)))


def _check_same_variables(model, clone):
    a = [tuple(v.shape) for v in model.weights]
    b = [tuple(v.shape) for v in clone.weights]
    if a != b:
        raise ValueError(f"the copy has other variables ({len(b)}, expected {len(a)} of the same shapes)")


def _blame(model):
    """The first (innermost) layer that its own config does not rebuild."""
    for layer in reversed(keras_compat.sublayers(model)):
        if layer is model:
            continue
        try:
            config = keras.saving.serialize_keras_object(layer)
            keras.saving.deserialize_keras_object(config, custom_objects=_classes(layer), safe_mode=False)
        except Exception as e:
            return (
                f"layer {layer.name!r} ({type(layer).__name__}) cannot be rebuilt from its config "
                f"({type(e).__name__}: {_short(e)}). Give {type(layer).__name__} a `get_config` "
                "returning its constructor arguments (and register it with "
                "@keras.saving.register_keras_serializable)."
            )
    return (
        f"{type(model).__name__} rebuilt from its config does not create the same variables: give it a "
        "`get_config` returning its constructor arguments, and a `build` (or first call) that creates "
        "every variable."
    )


def _short(error, limit=240):
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
