"""SSLModel: the one training-step engine every method shares.

A method declares what differs from the others, as class attributes, and
writes two functions that read like its paper; the engine does the rest.

Declarations:

- `global_views` / `local_views`: how many full-size views the step needs,
  and whether it takes smaller multi-crop views after them. `views=` (a
  `ViewMaker`: `TwoViews`, `MultiCrop`, `OneView`) is checked against them
  and against the encoder's input size at construction;
  `default_views(...)` is the method's paper recipe.
- `momentum_pairs`: `(online, target)` attribute names. The engine creates
  each target (a frozen copy that starts equal), updates it inside the
  compiled step with the cosine schedule from `momentum` to `momentum_end`,
  and saves it with the model.
- `gathered_outputs`: the per-sample outputs gathered across replicas
  before the loss (TF `MirroredStrategy`); `monitored_output`: the
  embedding whose std is logged as `z_std` (None: no `z_std`);
  `loss_terms`: loss terms logged as metrics; `min_batch_size`.
- Hyper-parameters are the constructor's keyword arguments, stored under
  their own names: `get_config`/`from_config` are derived from them.

Functions:

- `ssl_forward(views, *extra_inputs, training)`: views -> encoder ->
  heads, returns a dict of tensors.
- `compute_ssl_loss(outputs)`: returns `(loss, {term: value})`.

Keras's own `train_step` does the gradient work on every backend: `call`
runs the views, the momentum update and `ssl_forward` (the encoder runs once
per view group per step), and `compute_loss` turns the outputs into the
loss and updates the metrics. State that changes without gradients
(momentum targets, queues, centres) lives in non-trainable variables updated
with `.assign`, so it is compiled with the step and saved with the model.
"""

import functools
import inspect
import random

import keras
import numpy as np
from keras import ops

from keras_ssl import distribute, keras_compat, losses
from keras_ssl.backbones.external import warn_if_rescales_0_255
from keras_ssl.data import ArrayBatches, check_value_range, prepare_fit_data
from keras_ssl.data.sources import orders_itself
from keras_ssl.layers.augment import SeedStream, ViewMaker
from keras_ssl.layers.memory import MemoryBank
from keras_ssl.layers.momentum import momentum_target, momentum_update  # noqa: F401  (also importable from here)


@keras.saving.register_keras_serializable(package="keras_ssl")
class SSLModel(keras.Model):
    """Base class of all self-supervised methods.

    Args:
        encoder: a `keras.Model` (or layer) mapping float images in [0, 1]
            of shape `(B, H, W, C)` to features `(B, D)`; rank-4 outputs are
            global-average-pooled. `model.encoder` is this object, the bare
            backbone to keep after training.
        views: a `ViewMaker` (`TwoViews`, `MultiCrop`, `OneView`) returning
            the list of augmented views of a batch; defaults to the method's
            `default_views`.
        input_shape: `(H, W, C)` of the images fed to `fit`; defaults to the
            encoder's input shape.
        image_size: side of the full-size views; defaults to `H` (or to the
            size of the given `views`).
        value_range: `(low, high)` of the input pixel values. `None` means
            uint8 images are in [0, 255] and float images in [0, 1].
        seed: integer seed from which every random layer gets its own.
        momentum: EMA momentum of the targets at step 0, in [0, 1] (methods
            with `momentum_pairs` only).
        momentum_end: EMA momentum at the last step (cosine schedule).
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:
        >>> class MeanTeacher(SSLModel):
        ...     momentum_pairs = (("encoder", "teacher"),)
        ...     gathered_outputs = ("h", "t")
        ...     def __init__(self, encoder, *, momentum=0.99, momentum_end=1.0, **kwargs):
        ...         super().__init__(encoder, momentum=momentum, momentum_end=momentum_end, **kwargs)
        ...     view_recipe = staticmethod(keras_ssl.layers.simclr_views)
        ...     def ssl_forward(self, views, training):
        ...         (h,) = self.encode(views[:1], training)
        ...         (t,) = self.encode(views[1:], training, encoder=self.teacher)
        ...         return {"h": h, "t": ops.stop_gradient(t)}
        ...     def compute_ssl_loss(self, outputs):
        ...         return keras_ssl.losses.negative_cosine(outputs["h"], outputs["t"]), {}
    """

    #: full-size views the step needs (first in the list of views)
    global_views = 2
    #: whether the method also takes smaller views (multi-crop) after them
    local_views = False
    #: (online attribute, target attribute) pairs updated by EMA in the step
    momentum_pairs = ()
    #: per-sample outputs gathered across replicas before the loss
    gathered_outputs = ()
    #: output whose std (L2-normalised rows) is logged as `z_std`; None: none
    monitored_output = None
    #: loss terms of `compute_ssl_loss` logged as metrics
    loss_terms = ()
    #: smallest batch the method's loss is defined for
    min_batch_size = 2
    #: the CLI's backbone when none is named (MAE needs a ViT)
    default_backbone = "tiny"
    #: the paper's views: a recipe from `keras_ssl.layers` (`simclr_views`,
    #: `byol_views`, `multi_crop_views`, `crop_view`) and its options
    view_recipe = None
    view_options = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            # On torch a Keras layer is a torch.nn.Module, whose __call__
            # runs `forward` directly and would skip `call`.
            raise TypeError(f"{cls.__name__} must name its SSL forward `ssl_forward`, not `forward`.")
        if "__init__" in cls.__dict__:
            cls.__init__ = _finish_after(cls.__init__)

    def __init__(
        self,
        encoder,
        *,
        views=None,
        input_shape=None,
        image_size=None,
        value_range=None,
        seed=None,
        momentum=None,
        momentum_end=None,
        **kwargs,
    ):
        # The engine's own arithmetic (momentum updates, queues, centres,
        # losses) runs in float32 even under a mixed-precision policy: a
        # half-type model would autocast every variable it reads. The encoder
        # and heads keep the global policy and compute in the half type.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not callable(encoder):
            raise TypeError(
                f"`encoder` must be a keras.Model or layer, got {type(encoder).__name__}."
            )
        self.encoder = encoder
        warn_if_rescales_0_255(encoder)
        self.image_shape = _resolve_input_shape(encoder, input_shape)
        self.value_range = check_value_range(value_range)
        self.seed = int(seed) if seed is not None else random.randint(0, 2**30)
        self.seeds = SeedStream(self.seed)
        self.feature_dim = _feature_dim(encoder, self.image_shape)
        self.image_size = int(image_size or self.image_shape[0])
        if views is None:
            views = self.default_views(self.image_size, channels=self.image_shape[-1], seed=self.seeds())
        self.views = views
        self.view_shapes = self._check_views(views, image_size)
        self.image_size = int(self.view_shapes[0][0])
        self._term_trackers = {}
        for name in self.loss_terms:
            tracker = keras.metrics.Mean(name=name)
            setattr(self, f"_term_{name}", tracker)  # tracked by Keras
            self._term_trackers[name] = tracker
        if self.monitored_output is not None:
            self.z_std_tracker = keras.metrics.Mean(name="z_std")
        # Optimizer steps taken, counted inside the compiled step (callbacks
        # see only every k-th step under steps_per_execution=k), and the
        # length of the run, set by `MomentumScheduler` when `fit` starts.
        self.step = self.add_weight(
            name="step", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self.total_steps = self.add_weight(
            name="total_steps", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self._momentum_ends = None
        if self.momentum_pairs:
            if momentum is None:
                raise TypeError(f"{type(self).__name__} declares momentum targets: pass `momentum`.")
            self.set_momentum_schedule(momentum, momentum if momentum_end is None else momentum_end)
        elif momentum is not None or momentum_end is not None:
            raise TypeError(f"{type(self).__name__} has no momentum target: it takes no `momentum`.")

    def _finish_construction(self):
        """Runs once the method's `__init__` has built its heads: creates the targets."""
        for online, target in self.momentum_pairs:
            if getattr(self, target, None) is None:
                shape = self.image_shape if getattr(self, online) is self.encoder else None
                copy = momentum_target(getattr(self, online), input_shape=shape)
                copy.name = target  # model.summary() then tells the target from the online network
                setattr(self, target, copy)

    # ------------------------------------------------------------- views
    @classmethod
    def default_views(cls, image_size, *, channels=3, min_crop_scale=None, horizontal_flip=True, seed=None):
        """The method's paper recipe of views, a `ViewMaker`.

        Args:
            image_size: side of the full-size views.
            channels: image channels (colour augmentations need 3).
            min_crop_scale: smallest crop area fraction (default: the paper's);
                e.g. 0.3 keeps digits recognisable.
            horizontal_flip: flip half of the views (off for digits).
            seed: base seed.

        Example:
            >>> views = keras_ssl.SimCLR.default_views(32, seed=0)
        """
        if cls.view_recipe is None:
            raise NotImplementedError(f"{cls.__name__} declares no view_recipe: pass `views=`.")
        return cls.view_recipe(image_size, channels=channels, min_crop_scale=min_crop_scale,
                               horizontal_flip=horizontal_flip, seed=seed, **cls.view_options)

    def _check_views(self, views, image_size):
        name = type(self).__name__
        if not isinstance(views, ViewMaker):
            raise TypeError(
                f"`views` must be a keras_ssl view maker that returns a list of views "
                f"(TwoViews(augment), TwoViews(augment_1, augment_2), MultiCrop(...), OneView(augment)), "
                f"got {type(views).__name__}. Wrap a single augmentation layer as TwoViews(layer)."
            )
        wanted = f"{self.global_views} full-size view{'s' * (self.global_views > 1)}" + (
            " and any number of smaller local views" if self.local_views else "")
        if views.num_global != self.global_views or (views.num_local and not self.local_views):
            raise ValueError(
                f"{name} needs {wanted}; the given {type(views).__name__} makes "
                f"{views.num_global} full-size and {views.num_local} local views."
            )
        shapes = [tuple(int(d) for d in s) for s in views.view_shapes(self.image_shape)]
        if image_size is not None and shapes[0][:2] != (int(image_size), int(image_size)):
            raise ValueError(f"image_size={image_size} but the views are {shapes[0][0]}x{shapes[0][1]}.")
        if any(s[-1] != self.image_shape[-1] for s in shapes):
            raise ValueError(
                f"the views have {sorted({s[-1] for s in shapes})} channels but the images have "
                f"{self.image_shape[-1]}; build the views with channels={self.image_shape[-1]}."
            )
        refused = sorted({s[:2] for s in shapes if not _accepts(self.encoder, s)})
        if refused:
            sizes = ", ".join(f"{h}x{w}" for h, w in refused)
            takes = _encoder_spatial_shape(self.encoder)
            if takes and None in takes:  # any size in principle, yet too small for its strides
                raise ValueError(
                    f"the encoder cannot take {name}'s {sizes} views (its layers need larger "
                    "inputs): use larger images or views (e.g. a larger local_size)."
                )
            takes = f"{takes[0]}x{takes[1]} inputs only" if takes else "other inputs"
            raise ValueError(
                f"the encoder takes {takes}, but {name}'s views include {sizes}. Build the "
                f"encoder with input shape (None, None, {self.image_shape[-1]}) and pass "
                f"input_shape={self.image_shape} to {name}, or make views of the size the "
                "encoder takes."
            )
        return shapes

    # ----------------------------------------------------------- helpers
    def next_seed(self):
        """A fresh seed for the next random layer (distinct per layer)."""
        return self.seeds()

    def preprocess(self, images):
        """Casts input pixels to float32 in [0, 1]."""
        images = ops.convert_to_tensor(images)
        if self.value_range is not None:
            low, high = self.value_range
            return (ops.cast(images, "float32") - low) / (high - low)
        if "int" in str(images.dtype):
            return ops.cast(images, "float32") / 255.0
        return ops.cast(images, "float32")

    def encode(self, views, training=False, encoder=None):
        """Runs `encoder` once per group of consecutive same-size views.

        Args:
            views: list of image batches.
            training: passed to the encoder (BatchNorm mode).
            encoder: defaults to `self.encoder` (pass a momentum target).

        Returns:
            list of `(B, D)` feature batches, one per view.
        """
        encoder = encoder or self.encoder
        groups = []
        for view in views:
            if groups and tuple(groups[-1][-1].shape[1:]) == tuple(view.shape[1:]):
                groups[-1].append(view)
            else:
                groups.append([view])
        features = []
        for group in groups:
            batch = group[0] if len(group) == 1 else ops.concatenate(group, axis=0)
            h = pool_features(encoder(batch, training=training))
            features.extend(ops.split(h, len(group), axis=0) if len(group) > 1 else [h])
        return features

    def embed(self, views, head, training=False, encoder=None):
        """`head(encoder(view))` for each view: the encoder runs once per same-size group.

        Example:
            >>> z1, z2 = self.embed(views, self.projector, training)
        """
        return [head(h, training=training) for h in self.encode(views, training, encoder=encoder)]

    # ---------------------------------------------------------- momentum
    def set_momentum_schedule(self, momentum, momentum_end=1.0):
        """Sets the cosine momentum schedule from `momentum` to `momentum_end`.

        `current_momentum()` then follows
        `end - (end - start) * (cos(pi * step / total_steps) + 1) / 2`
        over the optimizer steps of the `fit` call (BYOL's schedule).
        """
        for name, tau in (("momentum", momentum), ("momentum_end", momentum_end)):
            if not 0.0 <= tau <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {tau}.")
        if self._momentum_ends is None:
            # A variable, not Python floats: a new schedule set by a callback
            # must reach a step function that is already compiled, and the
            # live values are what `get_config` saves.
            self._momentum_ends = self.add_weight(
                name="momentum_ends", shape=(2,), trainable=False,
                initializer=keras.initializers.Constant([momentum, momentum_end]),
            )
        else:
            self._momentum_ends.assign([momentum, momentum_end])

    @property
    def momentum(self):
        """EMA momentum at the start of the schedule (None without targets)."""
        return None if self._momentum_ends is None else _float32_value(self._momentum_ends[0])

    @property
    def momentum_end(self):
        """EMA momentum at the end of the schedule (None without targets)."""
        return None if self._momentum_ends is None else _float32_value(self._momentum_ends[1])

    def training_progress(self):
        """Fraction of the run done, in [0, 1] (0 when the length is unknown)."""
        total = ops.cast(self.total_steps, "float32")
        done = ops.cast(self.step, "float32")
        return ops.where(total > 0, ops.minimum(done / ops.maximum(total, 1.0), 1.0), 0.0)

    def current_momentum(self):
        """The EMA momentum of this step (compiled with it)."""
        base, end = self._momentum_ends[0], self._momentum_ends[1]
        cosine = (ops.cos(np.pi * self.training_progress()) + 1.0) / 2.0
        return end - (end - base) * cosine

    def _update_targets(self):
        if not self.momentum_pairs:
            return
        tau = self.current_momentum()
        for online, target in self.momentum_pairs:
            momentum_update(getattr(self, online), getattr(self, target), tau)

    def check_batch_size(self, batch_size):
        """Raises ValueError when the method cannot train on batches of this size."""
        if batch_size < self.min_batch_size:
            raise ValueError(
                f"{type(self).__name__} needs batches of at least "
                f"{self.min_batch_size} images, got batch_size={batch_size}."
            )
        for layer in keras_compat.sublayers(self):
            if isinstance(layer, MemoryBank):
                layer.check_batch_size(batch_size)

    # ------------------------------------------------------------ engine
    def ssl_forward(self, views, training):
        """The method's SSL forward: views -> encoder -> heads; returns a dict.

        `views` is the list the view maker returned (global views first);
        extra model inputs (CLIP's token ids) follow it as arguments.
        """
        raise NotImplementedError

    def compute_ssl_loss(self, outputs):
        """Returns `(loss, {term_name: value})` from the forward's outputs."""
        raise NotImplementedError

    def _forward(self, inputs, training):
        extra = ()
        if isinstance(inputs, (tuple, list)):
            inputs, extra = inputs[0], tuple(inputs[1:])
        views = self.views(self.preprocess(inputs), training=True)
        return self.ssl_forward(views, *extra, training=training)

    def call(self, inputs, training=False):
        if training:
            self._update_targets()
            outputs = self._forward(inputs, training=True)
            self.step.assign(self.step + 1)
            return outputs
        return pool_features(self.encoder(self.preprocess(inputs), training=False))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not training:
            # `evaluate` called `self(x)` for embeddings; rebuild the SSL forward.
            y_pred = self._forward(x, training=False)
        # Under TF MirroredStrategy each replica holds a slice of the batch:
        # gather the declared per-sample outputs, compute the global loss,
        # then divide by the replicas since Keras sums their gradients.
        # Elsewhere (one device, JAX DataParallel) a no-op.
        if distribute.num_replicas() > 1:
            y_pred = {**y_pred, **distribute.gather({k: y_pred[k] for k in self.gathered_outputs})}
        loss, terms = self.compute_ssl_loss(y_pred)
        loss = ops.cast(loss, "float32")
        for name, value in terms.items():
            self._term_trackers[name].update_state(value)
        if self.monitored_output is not None:
            self.z_std_tracker.update_state(losses.embedding_std(y_pred[self.monitored_output]))
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return loss / distribute.num_replicas()

    def build(self, input_shape=None):
        """Builds every sublayer with one training forward on `build_inputs()`.

        It changes no state (no EMA, queue, step or BatchNorm update); see
        `distribute.build_forward`.
        """
        distribute.build_forward(lambda x: self.call(x, training=True), self.build_inputs())
        self.built = True

    def build_inputs(self):
        """The blank batch `build` runs the training forward on."""
        return ops.zeros((max(2, self.min_batch_size),) + self.image_shape)

    def _ensure_built(self):
        # Keras's automatic build nests this trace inside its own, which
        # fails on torch (meta-device tensors meet CPU variables); build here.
        if not self.built:
            self.build()

    def compile(self, optimizer="adam", jit_compile="auto", run_eagerly=False, **kwargs):
        """`keras.Model.compile` with the fastest default compilation per backend.

        Args:
            optimizer: a Keras optimizer (the method defines its own loss).
            jit_compile: `"auto"` picks XLA on JAX, a TF graph without XLA and
                eager PyTorch (fastest on CPU, measured); `True`/`False` forces.
            run_eagerly: debug mode, no compilation.
            **kwargs: other `keras.Model.compile` arguments.
        """
        if kwargs.pop("loss", None) is not None:
            raise ValueError(f"{type(self).__name__} defines its own loss; do not pass `loss`.")
        if run_eagerly:
            jit_compile = False
        # Saved as requested, so a model saved with "auto" on JAX (XLA) does
        # not force torch.compile when it is loaded on PyTorch.
        self._jit_request = jit_compile
        super().compile(
            optimizer=optimizer,
            jit_compile=distribute.resolve_jit_compile(jit_compile),
            run_eagerly=run_eagerly,
            **kwargs,
        )

    def make_train_function(self, force=False):
        """Keras's, compiled with `distribute.XLA_CPU_OPTIONS` on JAX on a CPU."""
        if not self._jit_with_cpu_options("train_function", self.train_step, force):
            return super().make_train_function(force)

    def make_test_function(self, force=False):
        """Keras's, compiled with `distribute.XLA_CPU_OPTIONS` on JAX on a CPU."""
        if not self._jit_with_cpu_options("test_function", self.test_step, force):
            return super().make_test_function(force)

    def _jit_with_cpu_options(self, attribute, step, force):
        # Keras's JAX trainer jits its step as `jax.jit(step, donate_argnums=0)` and wraps
        # it with `_make_function`; only the compiler options differ here. False: Keras's own.
        if self.run_eagerly or not self.jit_compile or not hasattr(self, "_make_function"):
            return False
        if getattr(keras.config, "is_nnx_enabled", lambda: False)():
            return False
        jit = distribute.cpu_jit()
        if jit is None:
            return False
        if getattr(self, attribute) is None or force:
            setattr(self, attribute, self._make_function(jit(step, donate_argnums=0)))
        return True

    def load_weights(self, filepath, *args, **kwargs):
        """`keras.Model.load_weights`, building the model first if needed."""
        self._ensure_built()
        if getattr(self, "optimizer", None) is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)  # so its state loads too
        return super().load_weights(filepath, *args, **kwargs)

    def fit(self, x=None, y=None, batch_size=None, **kwargs):
        """`keras.Model.fit` after checking the data (see `check_images`).

        NumPy inputs drop the last incomplete batch (as SSL training loaders
        do) so every step has the full batch the loss was designed for, and
        are batched in an order set by the model's seed and the epoch
        (`data.ArrayBatches`), so a resumed run sees the batches the
        uninterrupted one saw. A `keras.callbacks.BackupAndRestore` is
        replaced by keras_ssl's kill-safe one (`checkpoints.BackupAndRestore`);
        `DataEpochs` and `StopOnNaN` go first in the callback list.
        """
        from keras_ssl.callbacks import DataEpochs, MomentumScheduler, StopOnNaN
        from keras_ssl.checkpoints import BackupAndRestore

        x, y, batch_size = self._check_fit_data(x, y, batch_size)
        if hasattr(x, "__next__") and kwargs.get("epochs", 1) - kwargs.get("initial_epoch", 0) > 1 \
                and not kwargs.get("steps_per_epoch"):
            raise ValueError(
                f"fit(epochs={kwargs['epochs']}) got a generator or iterator, which is read once: the second "
                "epoch would find it empty (Keras then replays its first batches). Give a PyDataset, a list "
                "of batches or a torch DataLoader, or an endless generator with steps_per_epoch.")
        self._ensure_built()
        if isinstance(x, np.ndarray) and (y is None or y.dtype.kind in "biuf") and not any(
                kwargs.get(k) for k in ("validation_split", "sample_weight", "class_weight")) \
                and not distribute.needs_array_input(self):
            # Seeded by epoch, not by the global state: exact resume (see ArrayBatches).
            x, y = ArrayBatches(x, y, batch_size or 32, shuffle=kwargs.pop("shuffle", True), seed=self.seed), None
            batch_size = None
        if orders_itself(x):
            kwargs["shuffle"] = False  # Keras would reshuffle the batches from Python's global `random`
        callbacks = [BackupAndRestore.like(c) if type(c) is keras.callbacks.BackupAndRestore else c
                     for c in kwargs.pop("callbacks", None) or []]
        if not any(isinstance(c, MomentumScheduler) for c in callbacks):
            callbacks.append(MomentumScheduler())
        if not any(isinstance(c, StopOnNaN) for c in callbacks):
            # First, before any checkpoint saves; checking the variables whenever one saves.
            every = [c.save_freq for c in callbacks if isinstance(c, (keras.callbacks.ModelCheckpoint,
                     keras.callbacks.BackupAndRestore)) and isinstance(getattr(c, "save_freq", None), int)]
            callbacks.insert(0, StopOnNaN(weights_every=min(every) if every else None))
        guard = DataEpochs(x)
        callbacks.insert(0, guard)
        try:
            return super().fit(x, y, batch_size=batch_size, callbacks=callbacks, **kwargs)
        except UnboundLocalError:  # Keras 3.15's JAX fit reads the logs of a step that never ran
            if guard.steps == 0:
                raise guard.empty_error(guard.epoch) from None
            raise

    def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
        """`keras.Model.evaluate`: the SSL loss on held-out images (views drawn anew)."""
        x, y, batch_size = self._check_fit_data(x, y, batch_size)
        self._ensure_built()
        return super().evaluate(x, y, batch_size=batch_size, **kwargs)

    def _check_fit_data(self, x, y, batch_size):
        """One validation path for every source (see `data.prepare_fit_data`)."""
        return prepare_fit_data(
            x, y, batch_size, channels=self.image_shape[-1], value_range=self.value_range,
            min_size=self.image_size, check_batch=self.check_batch_size,
        )

    # ----------------------------------------------------------- saving
    def save_own_variables(self, store):
        # Keras saves no SeedGenerator state, so a run resumed from a
        # checkpoint (BackupAndRestore) would draw other augmentations than
        # the uninterrupted run. The model saves every generator under it.
        super().save_own_variables(store)
        for i, generator in enumerate(keras_compat.seed_generators(self)):
            store[f"seed_state_{i}"] = generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        own = {k: store[k] for k in keys if not k.startswith("seed_state_")}
        super().load_own_variables(own)
        for i, generator in enumerate(keras_compat.seed_generators(self)):
            if f"seed_state_{i}" in keys:
                generator.state.assign(store[f"seed_state_{i}"])

    @classmethod
    def hyperparameters(cls):
        """Names of the constructor's arguments, subclass first: the config's keys."""
        names = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is keras.Model:
                continue
            if not issubclass(klass, SSLModel):
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
        config = {key: keras.saving.deserialize_keras_object(value)
                  if isinstance(value, dict) and "class_name" in value else value
                  for key, value in config.items()}
        return cls(**config)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and "jit_compile" in config:
            config["jit_compile"] = getattr(self, "_jit_request", "auto")
        return keras_compat.portable_compile_config(config)

    def compile_from_config(self, config):
        # Keras skips this for models that override `compile`; ours only
        # changes defaults, so restoring the compile state is safe.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)


# Constructor arguments stored under another attribute name.
_CONFIG_ATTRIBUTES = {"input_shape": "image_shape"}


def _finish_after(init):
    """Wraps a method's `__init__` so the engine finishes construction after it."""

    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if type(self).__init__ is wrapped:  # the outermost constructor only
            self._finish_construction()

    return wrapped


def pool_features(h):
    """Encoder output as `(B, D)` features.

    Rank-4 maps `(B, H, W, C)` are average-pooled over space, rank-3 token
    sequences `(B, T, D)` (ViTs) over tokens: the mean needs no class
    token and is what MAE fine-tunes on. To use a class token instead, pool
    inside the encoder (`backbones.from_keras_hub(..., pooling="cls")`).

    Example:
        >>> features = pool_features(encoder(images))
    """
    if len(h.shape) in (3, 4):
        return ops.mean(h, axis=tuple(range(1, len(h.shape) - 1)))
    if len(h.shape) != 2:
        raise ValueError(
            f"the encoder must return (B, D) features, (B, T, D) tokens or (B, H, W, C) maps, got {h.shape}."
        )
    return h


def _float32_value(x):
    # A float32 variable holds 0.99 as 0.99000001; its 7 significant digits
    # give back the decimal that was set.
    return float(f"{float(x):.7g}")


def _accepts(encoder, view_shape):
    """Whether `encoder` maps a batch of `view_shape` images to features (traced, no compute)."""
    if view_shape[:2] == tuple(_encoder_spatial_shape(encoder) or ())[:2]:
        return True
    try:
        encoder.compute_output_spec(keras.KerasTensor((2, *view_shape), dtype="float32"))
    except Exception:  # Keras's input-spec check, or a layer that needs the built size
        return False
    return True


def _encoder_spatial_shape(encoder):
    """The `(H, W)` the encoder accepts (None where any size goes), or None."""
    try:
        shape = tuple(encoder.input_shape[1:])
    except (AttributeError, ValueError, TypeError):
        return None
    return shape[:2] if len(shape) == 3 else None


def _resolve_input_shape(encoder, input_shape):
    if input_shape is None:
        try:
            input_shape = tuple(encoder.input_shape[1:])
        except (AttributeError, ValueError):
            # A subclassed encoder knows the shape it was built with.
            built = keras_compat.built_input_shape(encoder)
            input_shape = tuple(built[1:]) if built is not None else None
    if input_shape is None or None in tuple(input_shape):
        raise ValueError(
            "cannot tell the image shape the encoder takes: pass input_shape=(H, W, C) "
            f"(got {input_shape})."
        )
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}.")
    return input_shape


def _feature_dim(encoder, image_shape):
    spec = keras.KerasTensor((2,) + tuple(image_shape), dtype="float32")
    out = encoder.compute_output_spec(spec) if hasattr(encoder, "compute_output_spec") else None
    if out is None or not hasattr(out, "shape"):
        raise ValueError("the encoder must map an image batch to a single feature tensor.")
    return int(out.shape[-1])
