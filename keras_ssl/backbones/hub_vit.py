"""keras-hub's ViT and DINOv2 backbones as token encoders (iBOT, DINOv2, I-JEPA, MAE, MSN, SimMIM).

`HubViT(backbone)` is a keras_ssl `ViT` whose every variable is the
keras-hub backbone's own: it runs the backbone's patch embedding, class
token, positions (interpolated for other crop sizes), register tokens,
transformer layers and final norm, split where the token methods need it:

    tokens = encoder.embed_patches(images, mask=..., mask_token=...)   # (B, N, dim), positions added
    features = encoder.encode_tokens(tokens, attention_mask=...)       # (B, 1 + N, dim)

After pretraining, `encoder.backbone` is the keras-hub model with the
trained weights, which saves and loads with keras-hub alone.
"""

import keras
import numpy as np
from keras import ops

from keras_ssl.backbones.transformer import drop_paths
from keras_ssl.backbones.vit import ViT

layers = keras.layers
SUPPORTED = ("ViTBackbone", "DINOV2Backbone")


def _keras_hub():
    try:
        import keras_hub
    except ImportError:
        raise ImportError("keras-hub backbones need keras-hub: pip install keras-ssl[hub]") from None
    return keras_hub


def _as_backbone(backbone):
    """The backbone itself, or rebuilt from its serialized config (`from_config`, clones)."""
    hub = _keras_hub()  # registers keras-hub's classes before a config names them
    if isinstance(backbone, dict):
        backbone = keras.saving.deserialize_keras_object(backbone)
    if isinstance(backbone, hub.models.ViTBackbone):
        kind, problems = "vit", [] if backbone.use_class_token else ["use_class_token=True"]
        patch = tuple(int(p) for p in backbone.patch_size)
        data_format = backbone.data_format
    elif isinstance(backbone, hub.models.DINOV2Backbone):
        kind, problems = "dinov2", []
        patch = (backbone.patch_size, backbone.patch_size)
        data_format = backbone.embeddings.data_format
    else:
        raise TypeError(
            f"HubViT needs a keras-hub {' or '.join(SUPPORTED)}: the token methods put mask tokens between "
            "the patch embedding and the positions and run the transformer layers on token subsets, so it "
            f"needs those parts; got {type(backbone).__name__}. keras_ssl.backbones.from_keras_hub(backbone) "
            "makes any keras-hub backbone a pooled encoder (DINO, SimCLR, BYOL, ...)."
        )
    shape = tuple(backbone.image_shape)
    if data_format != "channels_last":
        problems.append("data_format='channels_last'")
    if patch[0] != patch[1]:
        problems.append(f"square patches (got {patch})")
    if len(shape) != 3 or shape[0] != shape[1] or shape[0] is None:
        problems.append(f"a square image_shape (got {shape})")
    if problems:
        raise ValueError(f"HubViT needs the {type(backbone).__name__} built with {', '.join(problems)}.")
    return backbone, kind, patch[0]


def _per_channel(value, factor, identity):
    values = np.asarray(identity if value is None else value, "float64").reshape(-1) * factor
    return [float(v) for v in values]


def _resize_table(table, source, target, antialias=False):
    """A `(1, 1 + h * w, dim)` class + patch position table moved from grid `source` to `target`."""
    if tuple(source) == tuple(target):
        return table
    dim = table.shape[-1]
    grid = ops.reshape(ops.cast(table[:, 1:], "float32"), (1, source[0], source[1], dim))
    grid = ops.image.resize(grid, tuple(target), interpolation="bicubic", antialias=antialias)
    patches = ops.cast(ops.reshape(grid, (1, target[0] * target[1], dim)), table.dtype)
    return ops.concatenate([table[:, :1], patches], axis=1)


def sync_dinov2_positions(backbone):
    """Writes a DINOv2 backbone's trained positions into the table its file keeps.

    keras-hub's `DINOV2Embedding` trains `interpolated_position_embeddings`
    and saves `position_embeddings`, re-derived from the trained table only
    when the *signed* sum of the change exceeds epsilon: trained positions
    can be dropped from the file. This always re-derives them (keras-hub's
    own bicubic resize). Other backbones are left as they are.

    Example:
        >>> import keras_hub  # doctest: +SKIP
        >>> backbone = keras_hub.models.DINOV2Backbone(patch_size=4, num_layers=1, hidden_dim=16, num_heads=2,
        ...     intermediate_dim=32, image_shape=(16, 16, 3), position_embedding_shape=(16, 16, 3))  # doctest: +SKIP
        >>> keras_ssl.backbones.hub_vit.sync_dinov2_positions(backbone)  # doctest: +SKIP
    """
    embedding = getattr(backbone, "embeddings", None)
    if not hasattr(embedding, "interpolated_position_embeddings"):
        return
    p = embedding.patch_size
    source = [s // p for s in embedding.image_shape]
    target = [s // p for s in embedding.position_embedding_shape]
    trained = ops.convert_to_tensor(embedding.interpolated_position_embeddings)
    embedding.position_embeddings.assign(_resize_table(trained, source, target, embedding.antialias_in_interpolation))


@keras.saving.register_keras_serializable(package="keras_ssl")
class HubTokens(layers.Layer):
    """A keras-hub ViT or DINOv2 backbone's forward, split for the token methods (see `HubViT`).

    Holds the backbone (its variables are this layer's); `call(images)` is
    the backbone's forward on `[0, 1]` images mapped by `scale`/`offset`,
    at any size divisible by the patch size: `(B, 1 + N, dim)`, registers dropped.

    Args:
        backbone: a keras-hub `ViTBackbone` or `DINOV2Backbone`, or its serialized config.
        scale, offset: the backbone's input is `255 * x * scale + offset` (keras-hub's
            `ImageConverter` convention); None: `x` itself.
        seed: seed of the drop-path coins of a DINOv2 built with `drop_path_rate`.

    Example:
        >>> import keras_hub  # doctest: +SKIP
        >>> vit = keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=1,
        ...     num_heads=2, hidden_dim=16, mlp_dim=32)  # doctest: +SKIP
        >>> tuple(keras_ssl.backbones.hub_vit.HubTokens(vit)(images).shape)  # doctest: +SKIP
        (8, 17, 16)
    """

    def __init__(self, backbone, scale=None, offset=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone, self.kind, self.patch_size = _as_backbone(backbone)
        # keras-hub 0.32's DINOV2DropPath scales each sample by a uniform draw in [1, 1 + 1/keep) instead
        # of dropping it (no floor) and takes no seed: its blocks run here with timm's DropPath instead.
        # A float read at call time: a momentum target sets it to 0, as for TransformerBlock.
        self.drop_path, self.seed = float(getattr(self.backbone, "drop_path_rate", 0.0)), seed
        if self.drop_path:
            self.seed_generator = keras.random.SeedGenerator(seed)
        self.scale = None if scale is None else _per_channel(scale, 1.0, None)
        self.offset = None if offset is None else _per_channel(offset, 1.0, None)
        channels = self.backbone.image_shape[-1]
        self._factor = np.resize(np.asarray(_per_channel(scale, 255.0, 1 / 255), "float32"), channels)
        self._shift = np.resize(np.asarray(_per_channel(offset, 1.0, 0.0), "float32"), channels)
        self._identity = bool(np.all(self._factor == 1.0) and np.all(self._shift == 0.0))
        self.dim = int(self.backbone.hidden_dim)
        self.grid = (self.backbone.image_shape[0] // self.patch_size,) * 2
        self.num_registers = int(getattr(self.backbone, "num_register_tokens", 0))
        own_token = getattr(self._embedding(), "mask_token", None)
        if own_token is not None:
            # The method's mask token is the one used: frozen, keras-hub's gets no decay (and no warning).
            own_token.trainable = False
        self.built = True

    # The backbone's parts, looked up (not stored: the backbone alone tracks them).
    def _embedding(self):
        if self.kind == "vit":
            return self.backbone.get_layer("vit_patching_and_embedding")
        return self.backbone.embeddings

    def _encoder_parts(self):
        """(dropout after the prefix tokens are in, transformer layers, final norm)."""
        if self.kind == "vit":
            encoder = self.backbone.get_layer("vit_encoder")
            return encoder.dropout, encoder.encoder_layers, encoder.layer_norm
        return self.backbone.embeddings.dropout, self.backbone.encoder.layers, self.backbone.layernorm

    def position_table(self, height=None, width=None):
        """`(1, 1 + height * width, dim)`: class position, then patch positions (resized for other grids)."""
        embedding = self._embedding()
        if self.kind == "vit":
            table = ops.expand_dims(ops.convert_to_tensor(embedding.position_embedding.embeddings), 0)
            antialias = False
        else:
            table = ops.convert_to_tensor(embedding.interpolated_position_embeddings)
            antialias = embedding.antialias_in_interpolation
        return _resize_table(table, self.grid, (height or self.grid[0], width or self.grid[1]), antialias)

    def embed_patches(self, images, training=False, mask=None, mask_token=None):
        """See `HubViT.embed_patches`."""
        height, width = images.shape[1], images.shape[2]
        p = self.patch_size
        if height is None or width is None or height % p or width % p:
            raise ValueError(f"patch_size {p} does not divide the image size {height}x{width}.")
        if not self._identity:
            images = images * ops.cast(self._factor, images.dtype) + ops.cast(self._shift, images.dtype)
        h, w = height // p, width // p
        embedding = self._embedding()
        if self.kind == "vit":
            patches = ops.reshape(embedding.patch_embedding(images, training=training), (-1, h * w, self.dim))
        else:
            patches = embedding.patch_embeddings(images, training=training)
        if mask is not None:
            if mask_token is None:
                raise ValueError("`mask` needs a `mask_token` to put in the masked places.")
            masked = ops.cast(ops.reshape(mask, (-1, h * w, 1)), "bool")
            token = ops.reshape(ops.cast(mask_token, patches.dtype), (1, 1, self.dim))
            patches = ops.where(masked, token, patches)
        return patches + ops.cast(self.position_table(h, w)[:, 1:], patches.dtype)

    def encode_tokens(self, tokens, training=False, attention_mask=None):
        """See `HubViT.encode_tokens`."""
        embedding = self._embedding()
        dropout, blocks, norm = self._encoder_parts()
        batch = ops.shape(tokens)[0]
        cls = embedding.class_token if self.kind == "vit" else embedding.cls_token
        cls = ops.cast(cls, tokens.dtype) + ops.cast(self.position_table()[:, :1], tokens.dtype)
        prefix = [ops.broadcast_to(cls, (batch, 1, self.dim))]
        if self.num_registers:
            registers = ops.cast(embedding.register_tokens, tokens.dtype)
            prefix.append(ops.broadcast_to(registers, (batch, self.num_registers, self.dim)))
        x = dropout(ops.concatenate([*prefix, tokens], axis=1), training=training)
        mask = None
        if attention_mask is not None:
            keys = ops.cast(attention_mask, "bool")
            keys = ops.concatenate([ops.ones((batch, 1 + self.num_registers), "bool"), keys], axis=1)
            # Keras's MultiHeadAttention takes (B, queries, keys): every query sees the kept keys.
            mask = ops.logical_and(ops.ones_like(keys)[:, :, None], keys[:, None, :])
        forward = self._vit_block if self.kind == "vit" else self._dinov2_block
        for block in blocks:
            x = forward(block, x, mask, training)
        x = norm(x)
        if self.num_registers:
            x = ops.concatenate([x[:, :1], x[:, 1 + self.num_registers :]], axis=1)
        return x

    # keras-hub's blocks take no attention mask (and DINOv2's drop path does not drop): each block runs
    # from its own sublayers, in keras-hub's order, with the mask and timm's drop path.
    def _vit_block(self, block, x, mask, training):
        y = block.layer_norm_1(x)
        y = block.dropout(block.mha(y, y, attention_mask=mask, training=training), training=training)
        x = x + y
        return x + block.mlp(block.layer_norm_2(x), training=training)

    def _dinov2_block(self, block, x, mask, training):
        generator = getattr(self, "seed_generator", None)
        attention = block.attention
        y = block.norm1(x, training=training)
        y = attention.attention(query=y, value=y, key=y, attention_mask=mask, training=training)
        y = block.layer_scale1(attention.dropout(y, training=training), training=training)
        x = drop_paths(y, self.drop_path, generator, training) + x
        y = block.layer_scale2(block.mlp(block.norm2(x, training=training), training=training), training=training)
        return drop_paths(y, self.drop_path, generator, training) + x

    def call(self, images, training=False):
        return self.encode_tokens(self.embed_patches(images, training=training), training=training)

    def compute_output_shape(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        n = None if height is None or width is None else (height // self.patch_size) * (width // self.patch_size)
        return (input_shape[0], None if n is None else 1 + n, self.dim)

    def save_own_variables(self, store):
        # Saving visits this layer before the backbone inside it: its file then keeps the trained positions.
        sync_dinov2_positions(self.backbone)
        super().save_own_variables(store)

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "scale": self.scale,
            "offset": self.offset,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="keras_ssl")
class HubViT(ViT):
    """A keras-hub `ViTBackbone` or `DINOV2Backbone` as a keras_ssl token encoder.

    A `ViT` (what iBOT, DINOv2, I-JEPA, MAE, MSN and SimMIM take) made of
    the keras-hub backbone's own layers and variables, so pretraining trains
    the backbone itself; `encoder.backbone` hands it back, a plain keras-hub
    model. `embed_patches` puts `mask_token` in place of the masked patch
    embeddings before the positions are added (iBOT and DINOv2's order;
    keras-hub's DINOv2 does the same; its own `mask_token`, unused, is
    frozen); `encode_tokens` prepends the class
    token (with its position) and the registers, runs the transformer layers
    and the final norm. keras-hub's layers take no attention mask, so they
    run from their own sublayers, an `attention_mask` given to their
    `MultiHeadAttention` and DINOv2's with timm's drop path at the
    backbone's `drop_path_rate`. Other crop sizes get the position
    table resized (bicubic, as keras-hub's DINOv2). The images are `[0, 1]`;
    `scale`/`offset` map them to what the backbone was trained on.

    Args:
        backbone: a keras-hub `ViTBackbone` (with its class token) or
            `DINOV2Backbone` (registers welcome), channels last, square images
            and patches; or its serialized config.
        pool: `"cls"` (class token) or `"mean"` (patch tokens) for `encoder(images)`.
        scale, offset: the backbone's input is `255 * x * scale + offset` for
            `[0, 1]` images `x` (keras-hub's `ImageConverter` values); None: `x`.
        seed: seed of the drop-path coins, where a DINOv2 has `drop_path_rate`
            (run as timm's DropPath; keras-hub 0.32's own does not drop).
        name: model name (default: the backbone's, with `_tokens`).

    Example:
        >>> import keras_hub  # doctest: +SKIP
        >>> vit = keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=4, num_layers=1,
        ...     num_heads=2, hidden_dim=16, mlp_dim=32)  # doctest: +SKIP
        >>> encoder = keras_ssl.backbones.HubViT(vit)  # doctest: +SKIP
        >>> encoder.output_shape, encoder.grid_size  # doctest: +SKIP
        ((None, 16), 4)
        >>> model = keras_ssl.IJEPA(encoder, predictor_dim=16, predictor_depth=1, num_targets=2)  # doctest: +SKIP
        >>> encoder.backbone is vit  # doctest: +SKIP
        True
    """

    def __init__(self, backbone, pool="cls", scale=None, offset=None, seed=None, name=None, **kwargs):
        if pool not in ("cls", "mean"):
            raise ValueError(f"`pool` must be 'cls' or 'mean', got {pool!r}.")
        tokens = HubTokens(backbone, scale=scale, offset=offset, seed=seed, name="hub_tokens")
        hub = tokens.backbone
        shape = tuple(int(s) for s in hub.image_shape)
        inputs = keras.Input(shape, name="images")
        x = tokens(inputs)
        outputs = x[:, 0] if pool == "cls" else ops.mean(x[:, 1:], axis=1)
        # The functional constructor after ViT's (whose layers would be its own), as ViT reaches it: Keras
        # puts Functional among ViT's bases on the first functional init, and a second insertion is a cycle.
        super(ViT, self).__init__(inputs, outputs, name=name or f"{hub.name}_tokens", **kwargs)
        self.tokens = tokens
        self.image_size, self.channels, self.patch_size = shape[0], shape[-1], tokens.patch_size
        self.dim, self.pool, self.num_registers = tokens.dim, pool, tokens.num_registers
        self.depth, self.heads = int(hub.num_layers), int(hub.num_heads)
        self.interpolation = "bicubic"
        self.layerscale = getattr(hub, "layer_scale_init_value", None)
        self.input_spec = layers.InputSpec(ndim=4, axes={-1: self.channels})

    @property
    def backbone(self):
        """The keras-hub backbone (its DINOv2 position table synced with the trained one, for saving)."""
        sync_dinov2_positions(self.tokens.backbone)
        return self.tokens.backbone

    @property
    def patch_embed(self):
        embedding = self.tokens._embedding()
        return embedding.patch_embedding if self.tokens.kind == "vit" else embedding.patch_embeddings

    @property
    def pos_embed(self):
        return self.tokens._embedding()

    @property
    def blocks(self):
        return list(self.tokens._encoder_parts()[1])

    @property
    def norm(self):
        return self.tokens._encoder_parts()[2]

    def embed_patches(self, images, training=False, mask=None, mask_token=None):
        """Images `(B, H, W, C)` -> patch tokens with positions `(B, N, dim)` (no class token).

        Where `mask` `(B, N)` (1 or True: masked, raster order) is set, the
        patch embedding is replaced by `mask_token` (`(dim,)`) before the
        positions are added.
        """
        return self.tokens.embed_patches(images, training=training, mask=mask, mask_token=mask_token)

    def encode_tokens(self, tokens, training=False, attention_mask=None):
        """Patch tokens `(B, n, dim)` -> class token + layers + norm, `(B, 1 + n, dim)`, registers dropped.

        `attention_mask` `(B, n)` bool: the patch tokens that may be attended
        to (the class token and registers always may).
        """
        return self.tokens.encode_tokens(tokens, training=training, attention_mask=attention_mask)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.tokens.backbone),
            "pool": self.pool,
            "scale": self.tokens.scale,
            "offset": self.tokens.offset,
            "seed": self.tokens.seed,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)
