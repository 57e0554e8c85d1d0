"""SSLModel: the one training-step engine every method shares.

A method declares what differs from the others, as class attributes
(`engine.contract.MethodContract`), and writes two functions that read like
its paper; the engine does the rest:

- `ssl_forward(views, *extra_inputs, training)`: views -> encoder -> heads,
  returns a dict of tensors. It changes no state.
- `compute_ssl_loss(outputs)`: returns `(loss, {term: value})`.
- `update_state(outputs)` (optional): state that changes without gradients
  (queues, centres), updated after the loss has read the old values.

Keras's own `train_step` does the gradient work on every backend. `call`
runs, inside the compiled step, the momentum update, the views,
`ssl_forward`, the gather across replicas, the loss and `update_state`;
`compute_loss` returns that loss and updates the metrics. State lives in
non-trainable variables updated with `.assign`, so it is compiled with the
step and saved with the model.
"""

import random

import keras
from keras import ops

from keras_ssl import backend, keras_compat, losses
from keras_ssl.backbones.external import warn_if_rescales_0_255
from keras_ssl.data import check_value_range
from keras_ssl.engine import fit as fit_policy
from keras_ssl.engine.contract import MethodContract
from keras_ssl.engine.introspection import (
    check_views,
    encode_views,
    feature_dim,
    pool_features,
    resolve_input_shape,
)
from keras_ssl.engine.momentum import MomentumTargets
from keras_ssl.layers.memory import MemoryBank
from keras_ssl.views.seeds import SeedStream

# The engine's entries in the training forward's dict (methods' keys may not start with "_").
_LOSS, _TERM, _MONITORED = "_loss", "_term/", "_monitored"


@keras.saving.register_keras_serializable(package="keras_ssl")
class SSLModel(MethodContract, MomentumTargets, keras.Model):
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
        head_initializer: Dense initialisation of the MLP heads (`keras_ssl.initializers`); defaults to the
            method's `default_head_initializer`, its official code's (methods with fixed heads take none).
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:
        >>> class MeanTeacher(keras_ssl.SSLModel):
        ...     momentum_pairs = (("encoder", "teacher"),)
        ...     gathered_outputs = ("h", "t")
        ...     view_recipe = staticmethod(keras_ssl.views.simclr_views)
        ...     def __init__(self, encoder, *, momentum=0.99, momentum_end=1.0, **kwargs):
        ...         super().__init__(encoder, momentum=momentum, momentum_end=momentum_end, **kwargs)
        ...     def ssl_forward(self, views, training):
        ...         (h,) = self.encode(views[:1], training)
        ...         (t,) = self.encode(views[1:], training, encoder=self.teacher)
        ...         return {"h": h, "t": keras.ops.stop_gradient(t)}
        ...     def compute_ssl_loss(self, outputs):
        ...         return keras_ssl.losses.negative_cosine(outputs["h"], outputs["t"]), {}
        >>> model = MeanTeacher(keras_ssl.backbones.tiny_encoder((16, 16, 3), width=8))
        >>> model.compile(optimizer="adam")
        >>> history = model.fit(x_small, epochs=1, batch_size=8, verbose=0)
    """

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
        head_initializer=None,
        **kwargs,
    ):
        # The engine's own arithmetic (momentum updates, queues, centres,
        # losses) runs in float32 even under a mixed-precision policy: a
        # half-type model would autocast every variable it reads. The encoder
        # and heads keep the global policy and compute in the half type.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self._init_head_initializer(head_initializer)
        if not callable(encoder):
            raise TypeError(f"`encoder` must be a keras.Model or layer, got {type(encoder).__name__}.")
        self.encoder = encoder
        warn_if_rescales_0_255(encoder)
        self.image_shape = resolve_input_shape(encoder, input_shape)
        self.value_range = check_value_range(value_range)
        self.seed = int(seed) if seed is not None else random.randint(0, 2**30)
        self.seeds = SeedStream(self.seed)
        self.feature_dim = feature_dim(encoder, self.image_shape)
        self.image_size = int(image_size or self.image_shape[0])
        if views is None:
            views = self.default_views(
                self.image_size, channels=self.image_shape[-1], seed=self.seeds(), num_views=self.global_views
            )
        self.views = views
        self.view_shapes = check_views(self, views, image_size)
        self.image_size = int(self.view_shapes[0][0])
        self._init_trackers()  # a metric per declared loss term, and `z_std`
        # Optimizer steps taken, counted inside the compiled step (callbacks
        # see only every k-th step under steps_per_execution=k), and the
        # length of the run, set by `MomentumScheduler` when `fit` starts.
        self.step = self.add_weight(name="step", shape=(), dtype="int32", initializer="zeros", trainable=False)
        self.total_steps = self.add_weight(
            name="total_steps", shape=(), dtype="int32", initializer="zeros", trainable=False
        )
        self._init_momentum(momentum, momentum_end)

    def _finish_construction(self):
        """Runs once the method's `__init__` has built its heads: targets, then the contract's checks."""
        self._create_targets()
        self._check_hyperparameters()

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
        """Runs `encoder` once per group of consecutive same-size views, or per view (`encoder_batches`).

        Args:
            views: list of image batches.
            training: passed to the encoder (BatchNorm mode).
            encoder: defaults to `self.encoder` (pass a momentum target).

        Returns:
            list of `(B, D)` feature batches, one per view.
        """
        return encode_views(encoder or self.encoder, views, training, apart=self.encoder_batches == "view")

    def embed(self, views, head, training=False, encoder=None, together=False):
        """`head(encoder(view))` per view, the encoder run as `encode` runs it; `together`: one head call
        over all views' features, split back, so the head's BatchNorm spans them (SimCLR, SwAV, W-MSE)."""
        features = self.encode(views, training, encoder=encoder)
        if together and len(features) > 1:
            return ops.split(head(ops.concatenate(features, axis=0), training=training), len(features), axis=0)
        return [head(h, training=training) for h in features]

    def check_batch_size(self, batch_size):
        """Raises ValueError when the method cannot train on batches of this size."""
        if batch_size < self.min_batch_size:
            name = type(self).__name__
            raise ValueError(
                f"{name} needs batches of at least {self.min_batch_size} images, got batch_size={batch_size}."
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

    def update_state(self, outputs):
        """Updates the method's step state (queues, centres) from this replica's outputs.

        Runs in training only, inside the compiled step, after the loss has
        read the old state; `ssl_forward` itself changes no state.
        """

    def _forward(self, inputs, training):
        extra = ()
        if isinstance(inputs, (tuple, list)):
            inputs, extra = inputs[0], tuple(inputs[1:])
        views = self.views(self.preprocess(inputs), training=True)
        return self.ssl_forward(views, *extra, training=training)

    def _loss(self, outputs):
        """The global loss: declared outputs gathered across replicas (TF `MirroredStrategy`, torch processes)."""
        if backend.num_replicas() > 1:
            outputs = {**outputs, **backend.gather({k: outputs[k] for k in self.gathered_outputs})}
        loss, terms = self.compute_ssl_loss(outputs)
        return ops.cast(loss, "float32"), terms, outputs

    def call(self, inputs, training=False):
        if getattr(self, "_data_pass", None) is not None:  # a method's pass over the data (`engine.fit.data_pass`)
            return self._data_pass(inputs)
        if not training:
            if (self.needs_labels or self.needs_indices) and isinstance(inputs, (tuple, list)):
                inputs = inputs[0]  # `evaluate` passes (images, labels or indices); embeddings need the images
            return pool_features(self.encoder(self.preprocess(inputs), training=False))
        # The whole step's arithmetic runs here, where every backend keeps the
        # variables assigned (JAX drops non-metric updates made in compute_loss).
        self._update_targets()
        outputs = self._forward(inputs, training=True)
        loss, terms, gathered = self._loss(outputs)
        self.update_state(outputs)
        self.step.assign(self.step + 1)
        # The method's outputs, and the engine's under keys no method may use.
        step = {**outputs, _LOSS: loss, **{_TERM + k: v for k, v in terms.items()}}
        if self.monitored_output is not None:
            step[_MONITORED] = gathered[self.monitored_output]
        return step

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if training:
            loss, monitored = y_pred[_LOSS], y_pred.get(_MONITORED)
            terms = {k[len(_TERM) :]: v for k, v in y_pred.items() if k.startswith(_TERM)}
        else:  # `evaluate` called `self(x)` for embeddings; rebuild the SSL forward.
            loss, terms, gathered = self._loss(self._forward(x, training=False))
            monitored = gathered.get(self.monitored_output)
        for name, value in terms.items():
            self._term_trackers[name].update_state(value)
        if self.monitored_output is not None:
            self.z_std_tracker.update_state(losses.embedding_std(monitored))
        if self.losses:
            loss = loss + ops.sum(self.losses)
        # Each replica computed the global loss; Keras sums TF's replica gradients (torch processes average).
        return loss / backend.summed_replicas()

    def build(self, input_shape=None):
        """Builds every sublayer with one training forward on `build_inputs()`, checking the contract.

        It changes no state (no EMA, queue, step or BatchNorm update; see
        `backend.build_forward`). What `ssl_forward` and `compute_ssl_loss`
        return is compared with the declarations, so a misspelt or missing
        key fails here, naming the method and the key, not at the first step.
        """
        seen = {}

        def forward(x):
            outputs = self._forward(x, training=True)
            seen["outputs"], seen["terms"] = outputs, self.compute_ssl_loss(outputs)[1]
            self.update_state(outputs)

        backend.build_forward(forward, self.build_inputs())
        self._check_declarations(seen["outputs"], seen["terms"])
        self.built = True

    def build_inputs(self):
        """The blank batch `build` runs the training forward on (with blank labels or indices if declared)."""
        images = ops.zeros((max(2, self.min_batch_size),) + self.image_shape)
        if self.needs_labels or self.needs_indices:
            return (images, ops.zeros((ops.shape(images)[0],), "int32"))
        return images

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
            optimizer=optimizer, jit_compile=backend.resolve_jit_compile(jit_compile), run_eagerly=run_eagerly, **kwargs
        )
        backend.torch_processes.sync_gradients(self.optimizer)  # averaged over PyTorch processes, if any
        keras_compat.mean_logs_over_workers()  # TF's fit under MultiWorkerMirroredStrategy

    def make_train_function(self, force=False):
        """Keras's, compiled with `backend.compile.XLA_CPU_OPTIONS` on JAX on a CPU."""
        if not keras_compat.jit_step_function(self, "train_function", self.train_step, force):
            return super().make_train_function(force)

    def make_test_function(self, force=False):
        """Keras's, compiled with `backend.compile.XLA_CPU_OPTIONS` on JAX on a CPU."""
        if not keras_compat.jit_step_function(self, "test_function", self.test_step, force):
            return super().make_test_function(force)

    def load_weights(self, filepath, *args, **kwargs):
        """`keras.Model.load_weights`, building the model first if needed."""
        self._ensure_built()
        if getattr(self, "optimizer", None) is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)  # so its state loads too
        return super().load_weights(filepath, *args, **kwargs)

    def fit(self, x=None, y=None, batch_size=None, **kwargs):
        """`keras.Model.fit` after checking the data (see `data.prepare_fit_data`).

        NumPy inputs drop the last incomplete batch (as SSL training loaders do), so every step has
        the full batch the loss was designed for, and are batched in an order set by the model's seed
        and the epoch (`data.ArrayBatches`), so a resumed run sees the batches the uninterrupted one
        saw. A `keras.callbacks.BackupAndRestore` becomes keras_ssl's kill-safe one; `DataEpochs` goes
        first, every `StopOnNaN` before any checkpoint callback (`engine.fit.fit_arguments`). A fresh
        run first makes the method's pass over the data, if it has one (`engine.fit.before_training`).
        """
        fit_policy.before_training(self, x, y, batch_size, kwargs)
        x, y, batch_size, kwargs, guard = fit_policy.fit_arguments(self, x, y, batch_size, kwargs)
        self._ensure_built()
        backend.torch_processes.start_equal(self.weights, keras_compat.seed_generators(self))
        with keras_compat.empty_epoch_error(guard):
            return super().fit(x, y, batch_size=batch_size, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
        """`keras.Model.evaluate`: the SSL loss on held-out images (views drawn anew)."""
        x, y, batch_size = self.check_fit_data(x, y, batch_size)
        self._ensure_built()
        return super().evaluate(x, y, batch_size=batch_size, **kwargs)

    def check_fit_data(self, x, y, batch_size):
        """Checks `fit`'s `x, y, batch_size` before any step; returns them as `fit` uses them.

        One validation path for every source; a method overrides it to take more (CLIP: texts).

        Example:
            >>> keras_ssl.SimCLR(encoder).check_fit_data(x_small, None, 8)[2]
            8
        """
        return fit_policy.check_fit_data(self, x, y, batch_size)

    # ----------------------------------------------------------- saving
    def save(self, filepath, overwrite=True, **kwargs):
        """`keras.Model.save` through a temporary file and a rename: a failed write keeps the earlier file."""
        fit_policy.save_atomically(super().save, filepath, overwrite, **kwargs)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        """`keras.Model.save_weights` likewise (`engine.fit.save_atomically`), for `ModelCheckpoint` too."""
        fit_policy.save_atomically(super().save_weights, filepath, overwrite, **kwargs)

    def save_own_variables(self, store):
        # Keras saves no SeedGenerator state, so a resumed run (BackupAndRestore) would draw other
        # augmentations than the uninterrupted run: the model saves every generator under it.
        super().save_own_variables(store)
        for i, generator in enumerate(keras_compat.seed_generators(self)):
            store[f"seed_state_{i}"] = generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        super().load_own_variables({k: store[k] for k in keys if not k.startswith("seed_state_")})
        for i, generator in enumerate(keras_compat.seed_generators(self)):
            if f"seed_state_{i}" in keys:
                generator.state.assign(store[f"seed_state_{i}"])

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and "jit_compile" in config:
            config["jit_compile"] = getattr(self, "_jit_request", "auto")
        return keras_compat.portable_compile_config(config)

    def compile_from_config(self, config):
        # Keras skips this for models that override `compile`; ours only
        # changes defaults, so restoring the compile state is safe.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)
