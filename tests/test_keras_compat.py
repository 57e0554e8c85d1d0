"""Every Keras internal keras_ssl relies on behaves as `keras_compat` assumes.

If one of these fails after a Keras upgrade, the internal changed: fix the
helper in `keras_ssl/keras_compat.py` (or drop it if Keras fixed the gap).
"""

import os

import keras
import numpy as np
import pytest
from conftest import BACKEND, small_encoder

from keras_ssl import keras_compat
from keras_ssl.layers import RandomApply, RandomResizedCrop, color_jitter


class Outer(keras.Model):
    def __init__(self):
        super().__init__()
        self.inner = keras.Sequential([keras.layers.Dense(3), keras.layers.Dense(2)])
        self.crop = RandomResizedCrop(8, seed=1)
        self.jitter = RandomApply(color_jitter(0.5, seed=2), 0.8, seed=3)

    def call(self, x):
        return self.inner(x)


def test_sublayers_walks_the_whole_tree_once():
    model = Outer()
    layers = keras_compat.sublayers(model)
    assert layers[0] is model
    assert model.inner.layers[1] in layers and model.jitter.layer in layers
    assert len({id(layer) for layer in layers}) == len(layers)


def test_seed_generators_finds_nested_generators_once():
    model = Outer()
    generators = keras_compat.seed_generators(model)
    expected = [model.crop.seed_generator, model.jitter.seed_generator, model.jitter.layer.seed_generator]
    assert all(any(g is e for g in generators) for e in expected)
    assert len({id(g) for g in generators}) == len(generators) == 3


def test_keras_still_does_not_save_seed_generator_state(tmp_path):
    # The reason SSLModel saves the states itself; if Keras starts saving
    # them, this fails and the workaround can go.
    layer = RandomResizedCrop(8, seed=1)
    model = keras.Sequential([keras.Input((8, 8, 3)), layer])
    model(np.zeros((2, 8, 8, 3), "float32"), training=True)
    drawn = keras.ops.convert_to_numpy(layer.seed_generator.state).copy()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    restored = keras.ops.convert_to_numpy(loaded.layers[0].seed_generator.state)
    assert not np.array_equal(restored, drawn)


def test_is_functional():
    assert keras_compat.is_functional(small_encoder())
    inputs = keras.Input((4,))
    assert keras_compat.is_functional(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    assert not keras_compat.is_functional(Outer())
    assert not keras_compat.is_functional(keras.layers.Dense(2))


def test_built_input_shape():
    dense = keras.layers.Dense(3)
    assert keras_compat.built_input_shape(dense) is None
    dense.build((None, 5))
    assert tuple(keras_compat.built_input_shape(dense)) == (None, 5)
    assert tuple(keras_compat.built_input_shape(small_encoder())) == (None, 16, 16, 3)


def test_portable_compile_config_points_optimizers_at_keras_optimizers():
    config = {
        "optimizer": {
            "module": "keras.src.backend.torch.optimizers.torch_adam",
            "class_name": "Adam",
            "registered_name": "Adam",
        }
    }
    fixed = keras_compat.portable_compile_config(config)
    assert fixed["optimizer"]["module"] == "keras.optimizers"
    assert fixed["optimizer"]["registered_name"] is None
    assert keras_compat.portable_compile_config({}) == {}


@pytest.mark.skipif(BACKEND != "torch", reason="the backend module is recorded on torch only")
def test_keras_still_records_the_torch_optimizer_module():
    model = small_encoder()
    model.compile(optimizer="adam", loss="mse")
    module = model.get_compile_config()["optimizer"]["module"]
    assert ".backend." in module, "Keras fixed it: portable_compile_config may go"


def test_unsafe_deserialization_scope_lifts_safe_mode_and_restores_it():
    from keras.src.saving.serialization_lib import in_safe_mode

    before = in_safe_mode()
    with keras_compat.unsafe_deserialization():
        assert in_safe_mode() is False  # what Lambda.from_config reads
    assert in_safe_mode() == before  # the scope did not leak


def _dense_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_fit_starts_at_an_initial_epoch_set_in_on_train_begin():
    class Resume(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            keras_compat.set_initial_epoch(self.model, 2)

    model = _dense_model()
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    assert model.fit(x, y, epochs=4, verbose=0, callbacks=[Resume()]).epoch == [2, 3]
    keras_compat.set_initial_epoch(model, None)
    assert model.fit(x, y, epochs=1, verbose=0).epoch == [0]


def test_skipped_train_steps_read_their_batches_and_do_not_train():
    class Skip(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            keras_compat.skip_train_steps(self.model, 2)

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
    skipped, direct = _dense_model(), _dense_model()
    skipped.fit(x, y, batch_size=4, shuffle=False, verbose=0, callbacks=[Skip()])
    direct.fit(x[8:], y[8:], batch_size=4, shuffle=False, verbose=0)  # only the last two batches
    for a, b in zip(skipped.get_weights(), direct.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert getattr(skipped, "_keras_ssl_train_function", None) is None, "the train function is put back"


def _tiny_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_jit_step_function_replaces_keras_jax_step_only_where_it_applies():
    model = _tiny_model()
    model.make_train_function()
    applied = keras_compat.jit_step_function(model, "train_function", model.train_step, force=True)
    # JAX's trainer has `_make_function` and the CPU options apply; elsewhere Keras keeps its own.
    assert applied == (BACKEND == "jax" and hasattr(model, "_make_function"))
    if BACKEND == "jax":
        assert hasattr(model, "_make_function"), "Keras's JAX trainer no longer has _make_function"
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 1), "float32")
    history = model.fit(x, y, epochs=1, verbose=0)  # the replaced step trains
    assert np.isfinite(history.history["loss"][0])


def test_empty_epoch_error_names_the_epoch_only_for_an_epoch_without_steps():
    class Guard:
        steps, epoch = 0, 2

        def empty_error(self, epoch):
            return ValueError(f"epoch {epoch + 1} ran no training step")

    with pytest.raises(ValueError, match="epoch 3 ran no training step"):
        with keras_compat.empty_epoch_error(Guard()):
            raise UnboundLocalError("logs")
    Guard.steps = 1
    with pytest.raises(UnboundLocalError):
        with keras_compat.empty_epoch_error(Guard()):
            raise UnboundLocalError("logs")


def test_variable_index_finds_each_variables_optimizer_slot():
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    variables = [keras.Variable(np.zeros((2,)), name="a"), keras.Variable(np.zeros((3,)), name="b")]
    optimizer.build(variables)
    for v in variables:
        assert tuple(optimizer.momentums[keras_compat.variable_index(optimizer, v)].shape) == tuple(v.shape)


def test_backup_weights_path_is_where_keras_backup_and_restore_writes(tmp_path):
    callback = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    assert not os.path.exists(keras_compat.backup_weights_path(callback))
    model = _tiny_model()
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 1), "float32")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])  # Keras saves its backup at each epoch end
    assert os.path.isfile(keras_compat.backup_weights_path(callback))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="Keras's TensorFlow trainer")
def test_mean_logs_over_workers_patches_kerass_tensorflow_reduction():
    # The names it relies on: when Keras renames them, this fails first (the 2-worker run is in
    # tests/test_multiprocess_tf.py).
    import sys

    from keras_ssl.keras_compat import mean_logs_over_workers

    trainer = sys.modules["keras.src.backend.tensorflow.trainer"]
    assert callable(trainer._collective_all_reduce_multi_worker)
    mean_logs_over_workers()
    patched = trainer.reduce_per_replica
    assert getattr(patched, "keras_ssl", False)
    mean_logs_over_workers()  # idempotent: not wrapped twice
    assert trainer.reduce_per_replica is patched
