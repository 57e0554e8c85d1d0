"""Momentum (EMA) targets: the frozen copies MoCo, BYOL, DINO and NNCLR-style methods update."""

from keras import ops


def momentum_target(online, input_shape=None):
    """A frozen structural copy of `online` whose weights start equal.

    Any encoder or head that `backbones.clone_model` copies works:
    functional, Sequential, subclassed, with `Lambda` layers, keras-hub
    backbones. Its variables are non-trainable one by one (not
    `layer.trainable = False`, which would switch BatchNorm to moving
    statistics), so the target's BatchNorm uses batch statistics in training
    mode, as the reference implementations do. Update it with
    `momentum_update`.

    Args:
        online: the online network, built.
        input_shape: `(H, W, C)` to build a subclassed copy with.

    Example:
        >>> target = momentum_target(projector)
    """
    from keras_ssl.backbones.clone import clone_model

    target = clone_model(online, input_shape=input_shape)
    for v in target.weights:
        v.trainable = False
    return target


def momentum_update(online, target, momentum):
    """`target <- momentum * target + (1 - momentum) * online`, trainable weights only.

    Example:
        >>> momentum_update(model.encoder, model.target_encoder, 0.99)
    """
    for o, t in zip(online.weights, target.weights):
        if o.trainable:
            new = momentum * ops.convert_to_tensor(t) + (1.0 - momentum) * ops.stop_gradient(o)
            t.assign(ops.cast(new, t.dtype))
