"""SSLModel: the one training-step engine every method shares.

A method subclasses `SSLModel` and writes two things that read like its paper:

- `ssl_forward(images, training)`: views -> encoder -> heads, returns a dict.
- `compute_ssl_loss(outputs)`: returns `(loss, terms)` from `keras_ssl.losses`.

Keras's own `train_step` does the gradient work on every backend: `call`
runs `ssl_forward` (the encoder runs once per view group per step) and
`compute_loss` turns its outputs into the loss and updates the metrics.
Step state that changes without gradients (momentum targets, queues,
centres) lives in non-trainable variables updated with `.assign`, so it is
compiled with the step and saved with the model.
"""

import random

import keras
import numpy as np
from keras import ops

from keras_ssl import distribute, losses
from keras_ssl.data import check_images, to_dataset


@keras.saving.register_keras_serializable(package="keras_ssl")
class SSLModel(keras.Model):
    """Base class of all self-supervised methods.

    Args:
        encoder: a `keras.Model` (or layer) mapping float images in [0, 1]
            of shape `(B, H, W, C)` to features `(B, D)`; rank-4 outputs are
            global-average-pooled. `model.encoder` is this object, the bare
            backbone to keep after training.
        input_shape: `(H, W, C)` of the images fed to `fit`; defaults to the
            encoder's input shape.
        image_size: side of the augmented views; defaults to `H`.
        value_range: `(low, high)` of the input pixel values. `None` means
            uint8 images are in [0, 255] and float images in [0, 1].
        seed: integer seed from which every random layer gets its own.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:
        >>> class MyMethod(SSLModel):
        ...     def ssl_forward(self, images, training):
        ...         views = [self.augmenter(images, training=True) for _ in range(2)]
        ...         h1, h2 = self.encode(views, training)
        ...         return {"z1": h1, "z2": h2}
        ...     def compute_ssl_loss(self, outputs):
        ...         return keras_ssl.losses.nt_xent(outputs["z1"], outputs["z2"]), {}
    """

    #: smallest batch the method's loss is defined for
    min_batch_size = 2

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "forward" in cls.__dict__:
            # On torch a Keras layer is a torch.nn.Module, whose __call__
            # runs `forward` directly and would skip `call`.
            raise TypeError(f"{cls.__name__} must name its SSL forward `ssl_forward`, not `forward`.")

    def __init__(
        self,
        encoder,
        *,
        input_shape=None,
        image_size=None,
        value_range=None,
        seed=None,
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
        self.image_shape = _resolve_input_shape(encoder, input_shape)
        self.image_size = int(image_size or self.image_shape[0])
        if value_range is not None:
            value_range = tuple(float(v) for v in value_range)
            if len(value_range) != 2 or value_range[1] <= value_range[0]:
                raise ValueError(
                    f"`value_range` must be (low, high) with low < high, got {value_range}."
                )
        self.value_range = value_range
        self.seed = int(seed) if seed is not None else random.randint(0, 2**30)
        self._next_seed = self.seed
        self.feature_dim = _feature_dim(encoder, self.image_shape)
        self.z_std_tracker = keras.metrics.Mean(name="z_std")
        self._term_trackers = {}
        # Optimizer steps taken, counted inside the compiled step (callbacks
        # see only every k-th step under steps_per_execution=k), and the
        # length of the run, set by `MomentumScheduler` when `fit` starts.
        self.step = self.add_weight(
            name="step", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self.total_steps = self.add_weight(
            name="total_steps", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self._momentum_ends = None  # (tau_base, tau_end) variable, if the method has an EMA

    # ----------------------------------------------------------- helpers
    def next_seed(self):
        """A fresh seed for the next random layer (distinct per layer)."""
        self._next_seed += 1009
        return self._next_seed

    def add_term_metrics(self, *names):
        """Declares loss terms logged as metrics (`compute_ssl_loss` terms)."""
        for name in names:
            tracker = keras.metrics.Mean(name=name)
            setattr(self, f"_term_{name}", tracker)  # tracked by Keras
            self._term_trackers[name] = tracker

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
            h = _pool(encoder(batch, training=training))
            features.extend(ops.split(h, len(group), axis=0) if len(group) > 1 else [h])
        return features

    def set_momentum_schedule(self, tau_base, tau_end=1.0):
        """Declares a cosine momentum schedule from `tau_base` to `tau_end`.

        `current_momentum()` then follows
        `tau_end - (tau_end - tau_base) * (cos(pi * step / total_steps) + 1) / 2`
        over the optimizer steps of the `fit` call (BYOL's schedule).
        """
        for name, tau in (("tau_base", tau_base), ("tau_end", tau_end)):
            if not 0.0 <= tau <= 1.0:
                raise ValueError(f"momentum `{name}` must be in [0, 1], got {tau}.")
        if self._momentum_ends is None:
            # A variable, not Python floats: a new schedule set by a callback
            # must reach a step function that is already compiled.
            self._momentum_ends = self.add_weight(
                name="momentum_ends", shape=(2,), trainable=False,
                initializer=keras.initializers.Constant([tau_base, tau_end]),
            )
        else:
            self._momentum_ends.assign([tau_base, tau_end])

    @property
    def tau_base(self):
        """Momentum at the start of the schedule (None without an EMA)."""
        return None if self._momentum_ends is None else float(self._momentum_ends[0])

    @property
    def tau_end(self):
        """Momentum at the end of the schedule (None without an EMA)."""
        return None if self._momentum_ends is None else float(self._momentum_ends[1])

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

    def momentum_target(self, online):
        """A frozen structural clone of `online` whose weights start equal.

        Its variables are non-trainable one by one (not `layer.trainable =
        False`, which would switch BatchNorm to moving statistics), so the
        target's BatchNorm uses batch statistics in training mode, as the
        reference implementations do. Update it with `momentum_update`.
        """
        if isinstance(online, keras.Model) and _is_functional(online):
            target = keras.models.clone_model(online)
        else:
            target = online.__class__.from_config(online.get_config())
            target.build(_input_shape_of(online))
        target.set_weights(online.get_weights())
        for v in target.weights:
            v.trainable = False
        return target

    def momentum_update(self, online, target, momentum):
        """target <- momentum * target + (1 - momentum) * online, trainable weights only."""
        for o, t in zip(online.weights, target.weights):
            if o.trainable:
                new = momentum * ops.convert_to_tensor(t) + (1.0 - momentum) * ops.stop_gradient(o)
                t.assign(ops.cast(new, t.dtype))

    # ------------------------------------------------------------ engine
    def ssl_forward(self, images, training):
        """The method's SSL forward: views -> encoder -> heads; returns a dict."""
        raise NotImplementedError

    def compute_ssl_loss(self, outputs):
        """Returns `(loss, {term_name: value})` from the forward's outputs."""
        raise NotImplementedError

    def call(self, inputs, training=False):
        images = self.preprocess(inputs)
        if training:
            outputs = self.ssl_forward(images, training=True)
            self.step.assign(self.step + 1)
            return outputs
        return _pool(self.encoder(images, training=False))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not training:
            # `evaluate` called `self(x)` for embeddings; rebuild the SSL forward.
            y_pred = self.ssl_forward(self.preprocess(x), training=False)
        # Under TF MirroredStrategy each replica holds a slice of the batch:
        # gather it (outputs are per-sample, batch axis first), compute the
        # global loss, then divide by the replicas since Keras sums their
        # gradients. Elsewhere (one device, JAX DataParallel) a no-op.
        y_pred = _gather_outputs(self, y_pred)
        loss, terms = self.compute_ssl_loss(y_pred)
        loss = ops.cast(loss, "float32")
        for name, value in terms.items():
            self._term_trackers[name].update_state(value)
        if "z1" in y_pred:
            self.z_std_tracker.update_state(losses.embedding_std(y_pred["z1"]))
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
        """The blank batch `build` runs the training forward on: 2 images."""
        return ops.zeros((2,) + self.image_shape)

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

    def load_weights(self, filepath, *args, **kwargs):
        """`keras.Model.load_weights`, building the model first if needed."""
        self._ensure_built()
        if getattr(self, "optimizer", None) is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)  # so its state loads too
        return super().load_weights(filepath, *args, **kwargs)

    def fit(self, x=None, y=None, batch_size=None, **kwargs):
        """`keras.Model.fit` after checking the data (see `check_images`).

        NumPy inputs drop the last incomplete batch (as SSL training loaders
        do) so every step has the full batch the loss was designed for.
        """
        from keras_ssl.callbacks import MomentumScheduler, StopOnNaN

        x, y = self._check_fit_data(x, y, batch_size)
        self._ensure_built()
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if not any(isinstance(c, MomentumScheduler) for c in callbacks):
            callbacks.append(MomentumScheduler())
        if not any(isinstance(c, StopOnNaN) for c in callbacks):
            callbacks.insert(0, StopOnNaN())  # first: before any checkpoint saves
        return super().fit(x, y, batch_size=batch_size, callbacks=callbacks, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
        """`keras.Model.evaluate`: the SSL loss on held-out images (views drawn anew)."""
        x, y = self._check_fit_data(x, y, batch_size)
        self._ensure_built()
        return super().evaluate(x, y, batch_size=batch_size, **kwargs)

    def _check_fit_data(self, x, y, batch_size):
        if x is None:
            raise ValueError("`fit` needs training images `x`, got None.")
        if isinstance(x, np.ndarray):
            check_images(x, channels=self.image_shape[-1], value_range=self.value_range)
            if min(x.shape[1:3]) < self.image_size:
                raise ValueError(
                    f"images of {x.shape[1]}x{x.shape[2]} pixels are smaller than the "
                    f"{self.image_size}x{self.image_size} views {type(self).__name__} crops; "
                    "pass image_size=<at most the image side> (and a matching encoder)."
                )
            batch = batch_size or 32
            if min(batch, len(x)) < self.min_batch_size:
                raise ValueError(
                    f"{type(self).__name__} needs batches of at least "
                    f"{self.min_batch_size} images, got batch_size={min(batch, len(x))}."
                )
            if y is not None and len(y) != len(x):
                raise ValueError(
                    f"labels `y` have length {len(y)} but `x` has {len(x)} images."
                )
            keep = len(x) - len(x) % batch if len(x) >= batch else len(x)
            x = x[:keep]
            y = None if y is None else y[:keep]
            return x, y
        spec = getattr(x, "element_spec", None)
        if spec is not None:
            first = spec[0] if isinstance(spec, tuple) else spec
            shape = getattr(first, "shape", None)
            if shape is not None and shape.rank is not None:
                if shape.rank != 4:
                    raise ValueError(
                        "expected image batches of rank 4 (batch, height, width, "
                        f"channels), got a dataset of shape {shape}."
                    )
                if shape[-1] is not None and shape[-1] != self.image_shape[-1]:
                    raise ValueError(
                        f"the encoder takes {self.image_shape[-1]} channels, the "
                        f"dataset yields {shape[-1]}."
                    )
            return x, y
        return to_dataset(x), y

    # ----------------------------------------------------------- saving
    def _all_seed_generators(self):
        seen, generators = set(), []
        for layer in self._flatten_layers(include_self=True):
            for generator in getattr(layer, "_seed_generators", ()):
                if id(generator) not in seen:
                    seen.add(id(generator))
                    generators.append(generator)
        return generators

    def save_own_variables(self, store):
        # Keras saves no SeedGenerator state, so a run resumed from a
        # checkpoint (BackupAndRestore) would draw other augmentations than
        # the uninterrupted run. The model saves every generator under it.
        super().save_own_variables(store)
        for i, generator in enumerate(self._all_seed_generators()):
            store[f"seed_state_{i}"] = generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        own = {k: store[k] for k in keys if not k.startswith("seed_state_")}
        super().load_own_variables(own)
        for i, generator in enumerate(self._all_seed_generators()):
            if f"seed_state_{i}" in keys:
                generator.state.assign(store[f"seed_state_{i}"])

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            input_shape=list(self.image_shape),
            image_size=self.image_size,
            value_range=list(self.value_range) if self.value_range else None,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "augmenter", "augmenters", "text_encoder"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
            elif isinstance(config.get(key), list):  # one augmenter per view
                config[key] = [keras.saving.deserialize_keras_object(c) for c in config[key]]
        return cls(**config)

    def get_compile_config(self):
        # Keras records a torch-backend optimizer's module as
        # keras.src.backend.torch.optimizers.*; loading that on TF or JAX
        # builds a torch optimizer. Point it at the portable keras.optimizers.
        config = super().get_compile_config()
        if config and "jit_compile" in config:
            config["jit_compile"] = getattr(self, "_jit_request", "auto")
        opt = config.get("optimizer") if config else None
        if isinstance(opt, dict) and ".backend." in str(opt.get("module", "")):
            opt["module"] = "keras.optimizers"
            opt["registered_name"] = None
        return config

    def compile_from_config(self, config):
        # Keras skips this for models that override `compile`; ours only
        # changes defaults, so restoring the compile state is safe.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)


# Forward outputs that are not per-sample (memory banks, centres, their
# scores) and already hold the same value on every replica: not gathered.
# A method with other such outputs lists their keys in `replicated_outputs`.
_REPLICATED_OUTPUTS = ("queue", "queue_full", "queue_scores_0", "queue_scores_1", "center")


def _gather_outputs(model, outputs):
    if distribute.num_replicas() == 1 or not isinstance(outputs, dict):
        return outputs
    keep = set(getattr(model, "replicated_outputs", _REPLICATED_OUTPUTS))
    batched = {k: v for k, v in outputs.items() if k not in keep and len(getattr(v, "shape", ()))}
    return {**outputs, **distribute.gather(batched)}  # one collective (see gather)


def _pool(h):
    if len(h.shape) == 4:
        return ops.mean(h, axis=(1, 2))
    if len(h.shape) != 2:
        raise ValueError(f"the encoder must return (B, D) or (B, H, W, C) features, got {h.shape}.")
    return h


def _is_functional(model):
    return hasattr(model, "_nodes_by_depth") or type(model).__name__ in ("Functional", "Sequential")


def _input_shape_of(layer):
    shape = getattr(layer, "input_shape", None)
    if shape is None:
        shape = layer._build_shapes_dict and next(iter(layer._build_shapes_dict.values()))
    return shape


def _resolve_input_shape(encoder, input_shape):
    if input_shape is None:
        try:
            input_shape = tuple(encoder.input_shape[1:])
        except (AttributeError, ValueError):
            input_shape = None
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
