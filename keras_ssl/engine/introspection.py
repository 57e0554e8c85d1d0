"""What the engine learns about an encoder without running it: the image shape it takes, its
feature size, whether it accepts a view size, and features pooled to `(B, D)`."""

import keras
from keras import ops

from keras_ssl import keras_compat
from keras_ssl.views.makers import ViewMaker


def pool_features(h):
    """Encoder output as `(B, D)` features.

    Rank-4 maps `(B, H, W, C)` are average-pooled over space, rank-3 token
    sequences `(B, T, D)` (ViTs) over tokens: the mean needs no class
    token and is what MAE fine-tunes on. To use a class token instead, pool
    inside the encoder (`backbones.from_keras_hub(..., pooling="cls")`).

    Example:
        >>> from keras_ssl.engine import pool_features
        >>> tuple(pool_features(ops.ones((8, 4, 4, 32))).shape)   # feature maps
        (8, 32)
        >>> tuple(pool_features(ops.ones((8, 17, 64))).shape)   # ViT tokens
        (8, 64)
        >>> tuple(pool_features(encoder(images)).shape)   # already (B, D)
        (8, 32)
    """
    if len(h.shape) in (3, 4):
        return ops.mean(h, axis=tuple(range(1, len(h.shape) - 1)))
    if len(h.shape) != 2:
        raise ValueError(
            f"the encoder must return (B, D) features, (B, T, D) tokens or (B, H, W, C) maps, got {h.shape}."
        )
    return h


def encode_views(encoder, views, training=False, apart=False):
    """`encoder` run once per group of consecutive same-size views (or per view); one `(B, D)` batch per view.

    The grouping decides what the encoder's BatchNorm normalises over:
    SimCLR's official code concatenates its views, SwAV's and DINO's
    multi-crop wrappers run each resolution group at once, while BYOL,
    SimSiam, Barlow Twins, VICReg and ReSSL run each view alone.

    Args:
        encoder: the backbone.
        views: list of `(B, H, W, C)` batches.
        training: passed to the encoder (BatchNorm mode).
        apart: run the encoder on each view alone (batch statistics per view).

    Example:
        >>> from keras_ssl.engine.introspection import encode_views
        >>> v1, v2 = images, images[:, :, ::-1]
        >>> h1, h2 = encode_views(encoder, [v1, v2], training=True)   # one encoder call on 2B images
        >>> tuple(h1.shape), tuple(h2.shape)
        ((8, 32), (8, 32))
    """
    groups = []
    for view in views:
        if groups and not apart and tuple(groups[-1][-1].shape[1:]) == tuple(view.shape[1:]):
            groups[-1].append(view)
        else:
            groups.append([view])
    features = []
    for group in groups:
        batch = group[0] if len(group) == 1 else ops.concatenate(group, axis=0)
        h = pool_features(encoder(batch, training=training))
        features.extend(ops.split(h, len(group), axis=0) if len(group) > 1 else [h])
    return features


def check_views(model, views, image_size):
    """The view shapes of `views`, after checking them against what `model` declares and its encoder takes.

    Raises:
        TypeError, ValueError: naming the method, the views and what is wrong.
    """
    name = type(model).__name__
    if not isinstance(views, ViewMaker):
        raise TypeError(
            f"`views` must be a keras_ssl view maker that returns a list of views "
            f"(TwoViews(augment), TwoViews(augment_1, augment_2), MultiCrop(...), OneView(augment)), "
            f"got {type(views).__name__}. Wrap a single augmentation layer as TwoViews(layer)."
        )
    wanted = f"{model.global_views} full-size view{'s' * (model.global_views > 1)}" + (
        " and any number of smaller local views" if model.local_views else ""
    )
    if views.num_global != model.global_views or (views.num_local and not model.local_views):
        raise ValueError(
            f"{name} needs {wanted}; the given {type(views).__name__} makes "
            f"{views.num_global} full-size and {views.num_local} local views."
        )
    shapes = [tuple(int(d) for d in s) for s in views.view_shapes(model.image_shape)]
    if image_size is not None and shapes[0][:2] != (int(image_size), int(image_size)):
        raise ValueError(f"image_size={image_size} but the views are {shapes[0][0]}x{shapes[0][1]}.")
    if any(s[-1] != model.image_shape[-1] for s in shapes):
        raise ValueError(
            f"the views have {sorted({s[-1] for s in shapes})} channels but the images have "
            f"{model.image_shape[-1]}; build the views with channels={model.image_shape[-1]}."
        )
    refused = sorted({s[:2] for s in shapes if not accepts(model.encoder, s)})
    if refused:
        sizes = ", ".join(f"{h}x{w}" for h, w in refused)
        takes = encoder_spatial_shape(model.encoder)
        if takes and None in takes:  # any size in principle, yet too small for its strides
            raise ValueError(
                f"the encoder cannot take {name}'s {sizes} views (its layers need larger "
                "inputs): use larger images or views (e.g. a larger local_size)."
            )
        takes = f"{takes[0]}x{takes[1]} inputs only" if takes else "other inputs"
        raise ValueError(
            f"the encoder takes {takes}, but {name}'s views include {sizes}. Build the "
            f"encoder with input shape (None, None, {model.image_shape[-1]}) and pass "
            f"input_shape={model.image_shape} to {name}, or make views of the size the "
            "encoder takes."
        )
    return shapes


def accepts(encoder, view_shape):
    """Whether `encoder` maps a batch of `view_shape` images to features (traced, no compute)."""
    if view_shape[:2] == tuple(encoder_spatial_shape(encoder) or ())[:2]:
        return True
    try:
        encoder.compute_output_spec(keras.KerasTensor((2, *view_shape), dtype="float32"))
    except Exception:  # Keras's input-spec check, or a layer that needs the built size
        return False
    return True


def has_class_token(encoder):
    """Whether a token encoder's `encode_tokens` output starts with a class token: every keras_ssl
    `ViT` and keras-hub one except `ViT(class_token=False)` (I-JEPA's).

    Args:
        encoder: a token encoder.

    Example:
        >>> from keras_ssl.engine.introspection import has_class_token
        >>> has_class_token(keras_ssl.backbones.vit(16, 4, 8, 1, 2, class_token=False, pool="mean"))
        False
    """
    return getattr(encoder, "class_token", True) is not False


def encoder_spatial_shape(encoder):
    """The `(H, W)` the encoder accepts (None where any size goes), or None."""
    try:
        shape = tuple(encoder.input_shape[1:])
    except (AttributeError, ValueError, TypeError):
        return None
    return shape[:2] if len(shape) == 3 else None


def resolve_input_shape(encoder, input_shape):
    if input_shape is None:
        try:
            input_shape = tuple(encoder.input_shape[1:])
        except (AttributeError, ValueError):
            # A subclassed encoder knows the shape it was built with.
            built = keras_compat.built_input_shape(encoder)
            input_shape = tuple(built[1:]) if built is not None else None
    if input_shape is None or None in tuple(input_shape):
        raise ValueError(
            f"cannot tell the image shape the encoder takes: pass input_shape=(H, W, C) (got {input_shape})."
        )
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}.")
    return input_shape


def feature_dim(encoder, image_shape):
    spec = keras.KerasTensor((2,) + tuple(image_shape), dtype="float32")
    out = encoder.compute_output_spec(spec) if hasattr(encoder, "compute_output_spec") else None
    if out is None or not hasattr(out, "shape"):
        raise ValueError("the encoder must map an image batch to a single feature tensor.")
    return int(out.shape[-1])
