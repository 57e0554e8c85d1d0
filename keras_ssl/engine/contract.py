"""The method contract: what a method declares, the config derived from it, and the checks that
hold a method to its declarations when it is constructed and built, before any training."""

import functools
import inspect

import keras

from keras_ssl import initializers
from keras_ssl.backbones.vit import ViT
from keras_ssl.engine.introspection import has_class_token

# Constructor arguments stored under another attribute name.
_CONFIG_ATTRIBUTES = {"input_shape": "image_shape"}
#: what a token method uses of a keras_ssl `ViT`; another encoder with all of it is taken too
TOKEN_INTERFACE = ("embed_patches", "encode_tokens", "patch_size", "dim", "grid_size", "pool")


class MethodContract:
    """Declarations every method makes, as class attributes, with the engine's checks of them.

    The engine acts on these; no method name and no method's output key
    appears in the engine.
    """

    #: full-size views the step needs (first in the list of views)
    global_views = 2
    #: whether the method also takes smaller views (multi-crop) after them
    local_views = False
    #: outputs of `ssl_forward` gathered across replicas before the loss
    #: (per-sample tensors, or lists of them, whose loss couples the samples)
    gathered_outputs = ()
    #: outputs the loss uses per replica (per-sample means need no gather)
    local_outputs = ()
    #: output whose std (L2-normalised rows) is logged as `z_std`; None: none
    monitored_output = None
    #: loss terms of `compute_ssl_loss` logged as metrics
    loss_terms = ()
    #: smallest batch the method's loss is defined for
    min_batch_size = 2
    #: the CLI's backbone when none is named (MAE needs a ViT)
    default_backbone = "tiny"
    #: `(initializer, zero_init_residual)` of the official code's ResNet: the CLI builds its ResNets so
    resnet_init = ("torchvision", False)
    #: the official code's ViT initialisation (a `ViT(initializer=)` preset): the CLI builds its ViTs so
    vit_init = "timm"
    #: the official code's other ViT options (`ViT(**vit_options)`: positions, class token,
    #: LayerScale): the CLI builds its ViTs so
    vit_options = {}
    #: the method reads the encoder's class token; False: patch tokens only, so a ViT without a
    #: class token (`ViT(class_token=False)`, I-JEPA's) is welcome; checked with `token_encoder`
    needs_class_token = True
    #: the method encodes a subset of the patch tokens (MAE, I-JEPA, MSN drop patches), which a ViT
    #: with a relative position bias (`positions="relative"`, SimMIM's) cannot place: refused
    encodes_token_subsets = False
    #: the official code's Dense initialisation of the method's MLP heads (a `keras_ssl.initializers`
    #: preset such as "torch", "haiku", "simclr"), the default of `SSLModel`'s `head_initializer`;
    #: None: the heads have a fixed init and the method takes no `head_initializer`
    default_head_initializer = None
    #: the paper's views: a recipe from `keras_ssl.views.recipes`
    view_recipe = None
    #: `fit` takes integer labels as `y`, and `ssl_forward(views, labels, training)` gets them (SupCon)
    needs_labels = False
    #: `ssl_forward(views, indices, training)` gets each image's index in the dataset (DeepCluster v2)
    needs_indices = False
    #: the method works on patch tokens (mask tokens, dropped patches): the encoder must be a keras_ssl
    #: `ViT` or have its `TOKEN_INTERFACE`; checked before the method's constructor runs
    token_encoder = False
    #: what the encoder's BatchNorm normalises over, as in the official code: "group" (each run of
    #: consecutive same-size views in one call: SimCLR's concatenated views, SwAV's and DINO's multi-crop
    #: wrapper) or "view" (each view alone: BYOL, SimSiam, Barlow Twins, VICReg, ReSSL)
    encoder_batches = "group"
    #: the attribute holding the encoder the paper evaluates, which the CLI scores and saves as
    #: `encoder.keras`: the online `"encoder"`, or a momentum target (DINO's `"teacher_encoder"`)
    evaluated_encoder = "encoder"

    @property
    def feature_encoder(self):
        """The encoder whose features the paper evaluates (`evaluated_encoder`): the online one, or the
        momentum target for DINO, iBOT and DINOv2 (the teacher), I-JEPA and MSN (the target encoder).

        Example:
            >>> encoder = keras_ssl.backbones.tiny_encoder((None, None, 3), width=8)   # multi-crop sizes
            >>> model = keras_ssl.DINO(encoder, input_shape=(16, 16, 3), output_dim=16)
            >>> model.feature_encoder is model.teacher_encoder, model.encoder is model.teacher_encoder
            (True, False)
        """
        return getattr(self, self.evaluated_encoder)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            # On torch a Keras layer is a torch.nn.Module, whose __call__
            # runs `forward` directly and would skip `call`.
            raise TypeError(f"{cls.__name__} must name its SSL forward `ssl_forward`, not `forward`.")
        if cls.encoder_batches not in ("group", "view"):
            raise ValueError(f"{cls.__name__}.encoder_batches must be 'group' or 'view', got {cls.encoder_batches!r}.")
        if not cls.__module__.startswith("keras_ssl.engine"):
            engine = {n for k in cls.__mro__[1:] if k.__module__.startswith("keras_ssl.engine") for n in vars(k)}
            clashes = sorted(n for n in cls.__dict__ if n in engine and n.startswith("_") and not n.startswith("__"))
            if clashes:
                # A method's helper named like an engine internal would silently replace it.
                raise TypeError(f"{cls.__name__} redefines the engine's internal {clashes}: rename it.")
        if "__init__" in cls.__dict__:
            cls.__init__ = _finish_after(cls.__init__)

    @classmethod
    def default_views(
        cls,
        image_size,
        *,
        channels=3,
        min_crop_scale=None,
        horizontal_flip=True,
        seed=None,
        num_views=None,
        num_local=None,
    ):
        """The method's paper recipe of views, a `ViewMaker`.

        Args:
            image_size: side of the full-size views.
            channels: image channels (colour augmentations need 3).
            min_crop_scale: smallest crop area fraction (default: the paper's);
                e.g. 0.3 keeps digits recognisable.
            horizontal_flip: flip half of the views (off for digits).
            seed: base seed.
            num_views: full-size views, for a recipe that takes `num_views`
                (FastSiam, MMCR); other recipes make their paper's number.
            num_local: local crops, for a method with local views (its
                recipe's number when None).

        Raises:
            ValueError: `num_local` for a method whose views have no local crops.

        Example:
            >>> views = keras_ssl.SimCLR.default_views(32, seed=0)
            >>> keras_ssl.DINO.default_views(32, num_local=2, seed=0).num_local
            2
        """
        if cls.view_recipe is None:
            raise NotImplementedError(f"{cls.__name__} declares no view_recipe: pass `views=`.")
        options = dict(channels=channels, min_crop_scale=min_crop_scale, horizontal_flip=horizontal_flip, seed=seed)
        if num_views is not None and "num_views" in inspect.signature(cls.view_recipe).parameters:
            options["num_views"] = num_views
        if num_local is not None:
            if not cls.local_views:
                raise ValueError(f"{cls.__name__}'s views have no local crops: `num_local` does not apply.")
            options["num_local"] = num_local
        return cls.view_recipe(image_size, **options)

    @classmethod
    def hyperparameters(cls):
        """Names of the constructor's arguments, subclass first: the config's keys.

        Example:
            >>> "temperature" in keras_ssl.SimCLR.hyperparameters()
            True
        """
        names = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is keras.Model:
                continue
            if not issubclass(klass, MethodContract):
                break
            for p in inspect.signature(init).parameters.values():
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                    if p.name not in names:
                        names.append(p.name)
        return names

    def get_config(self):
        """Every constructor argument's live value (derived from the signatures)."""
        config = super().get_config()
        for name in self.hyperparameters():
            value = getattr(self, _CONFIG_ATTRIBUTES.get(name, name))
            config[name] = keras.saving.serialize_keras_object(value)
        return config

    @classmethod
    def from_config(cls, config):
        config = {
            key: keras.saving.deserialize_keras_object(value)
            if isinstance(value, dict) and "class_name" in value
            else value
            for key, value in config.items()
        }
        return cls(**config)

    def _init_head_initializer(self, head_initializer):
        """Sets `self.head_initializer`: the given one, checked, else the declared default."""
        default = type(self).default_head_initializer
        if default is None and head_initializer is not None:
            raise TypeError(
                f"{type(self).__name__}'s heads have a fixed initialisation (its paper's): "
                "it takes no `head_initializer`."
            )
        value = default if head_initializer is None else head_initializer
        self.head_initializer = None if value is None else initializers.check(value, name="head_initializer")

    def _init_trackers(self):
        """A `Mean` per declared loss term, and `z_std`'s when an output is monitored."""
        self._term_trackers = {}
        for name in self.loss_terms:
            tracker = keras.metrics.Mean(name=name)
            setattr(self, f"_term_{name}", tracker)  # tracked by Keras
            self._term_trackers[name] = tracker
        if self.monitored_output is not None:
            self.z_std_tracker = keras.metrics.Mean(name="z_std")

    def _check_hyperparameters(self):
        missing = [name for name in self.hyperparameters() if not hasattr(self, _CONFIG_ATTRIBUTES.get(name, name))]
        if missing:
            raise TypeError(
                f"{type(self).__name__} stores no attribute for its constructor argument(s) {missing}: "
                "store each under its own name (`self.x = x`), so `get_config` can save it."
            )

    @classmethod
    def _check_encoder(cls, encoder):
        """Raises TypeError, naming the method and the encoder, when a token method gets no token encoder
        (or one without the class token it reads)."""
        if not cls.token_encoder:
            return
        if cls.needs_class_token and not has_class_token(encoder):
            raise TypeError(
                f"{cls.__name__} reads the encoder's class token, and this {type(encoder).__name__} has none "
                "(class_token=False): build it with class_token=True."
            )
        if cls.encodes_token_subsets and getattr(encoder, "positions", None) == "relative":
            raise TypeError(
                f"{cls.__name__} encodes a subset of the patch tokens, which a relative position bias "
                "(positions='relative') cannot place: build the ViT with positions='learned' or 'sincos'."
            )
        if isinstance(encoder, ViT):
            return
        lacks = [name for name in TOKEN_INTERFACE if not hasattr(encoder, name)]
        if not lacks and "mask_token" not in inspect.signature(encoder.embed_patches).parameters:
            lacks = ["embed_patches(images, mask=, mask_token=)"]
        if lacks:
            raise TypeError(
                f"{cls.__name__} works on patch tokens: it needs a token encoder, a keras_ssl.backbones.ViT "
                "(backbones.vit_tiny(...), backbones.vit(...)) or a keras-hub ViT or DINOv2 backbone as a "
                "backbones.HubViT (backbones.from_keras_hub(backbone_or_preset, tokens=True)); "
                f"got {type(encoder).__name__}, which lacks {lacks}."
            )

    def _check_declarations(self, outputs, terms):
        """Compares what `ssl_forward` and `compute_ssl_loss` returned with the declarations."""
        name, keys = type(self).__name__, sorted(outputs)
        if any(k.startswith("_") for k in keys):
            raise ValueError(f"{name}.ssl_forward returns {keys}: keys starting with '_' are the engine's.")
        for what in ("gathered_outputs", "local_outputs"):
            missing = [k for k in getattr(self, what) if k not in outputs]
            if missing:
                raise ValueError(f"{name} declares {what} {missing}, but its ssl_forward returns {keys}.")
        undeclared = [k for k in keys if k not in (*self.gathered_outputs, *self.local_outputs)]
        if undeclared:
            raise ValueError(
                f"{name}.ssl_forward returns {undeclared}, declared in neither `gathered_outputs` "
                "(gathered across replicas before the loss) nor `local_outputs` (used per replica); "
                f"it returns {keys}."
            )
        if self.monitored_output is not None and self.monitored_output not in outputs:
            raise ValueError(f"{name} monitors {self.monitored_output!r}, but its ssl_forward returns {keys}.")
        if sorted(terms) != sorted(self.loss_terms):
            raise ValueError(
                f"{name}.compute_ssl_loss returns the terms {sorted(terms)}, but {name} declares "
                f"loss_terms={tuple(self.loss_terms)}."
            )


def encoder_to_evaluate(model):
    """The encoder whose features `model`'s paper evaluates: its `feature_encoder` (DINO's teacher), else
    its `encoder`; None when it has neither.

    Args:
        model: a keras_ssl method, or any model with an `encoder` attribute.

    Example:
        >>> from keras_ssl.engine.contract import encoder_to_evaluate
        >>> encoder = keras_ssl.backbones.tiny_encoder((None, None, 3), width=8)
        >>> encoder_to_evaluate(keras_ssl.DINO(encoder, input_shape=(16, 16, 3), output_dim=16)).name
        'teacher_encoder'
    """
    encoder = getattr(model, "feature_encoder", None)
    return getattr(model, "encoder", None) if encoder is None else encoder


def _finish_after(init):
    """Wraps a method's `__init__` so the engine checks the encoder before it and finishes construction after it."""

    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        outermost = type(self).__init__ is wrapped
        if outermost:  # before the constructor reads the encoder's token interface
            type(self)._check_encoder(args[0] if args else kwargs.get("encoder"))
        init(self, *args, **kwargs)
        if outermost:
            self._finish_construction()

    return wrapped
