"""The shared method-test harness (in the keras-hub style): what every method must do.

`run_method_test(make, x)` builds the method, checks its views against its
declarations, trains two steps (in each compile mode asked for), round-trips
its config and a whole-model `.keras` file (every variable, the optimizer,
the predictions), and trains on after loading. A method's own test file then
holds only what is particular to it: its loss against a NumPy reference, its
heads, its state.
"""

import os

import keras
import numpy as np

from keras_ssl.views import ViewMaker


def weights_of(layer):
    return [np.array(w) for w in layer.get_weights()]


def compile_mode(model, mode, learning_rate=1e-2):
    """Compiles `model` in `mode`: "default" (the backend's auto choice), "eager" or "jit"."""
    kwargs = {"run_eagerly": True} if mode == "eager" else {"jit_compile": True} if mode == "jit" else {}
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), **kwargs)
    return model


def check_build_and_views(model):
    """The built model makes the views it declares, and its training forward ran at build."""
    assert isinstance(model.views, ViewMaker)
    assert model.views.num_global == model.global_views
    assert model.views.num_local == 0 or model.local_views
    model.build()
    assert model.built
    # Building changes no state: the step counter and every momentum target stay put.
    assert int(model.step) == 0
    for online, target in model.momentum_pairs:
        for o, t in zip(getattr(model, online).weights, getattr(model, target).weights):
            np.testing.assert_array_equal(np.array(o), np.array(t))


def check_two_steps(model, x, y, fit_kwargs, mode):
    """Two training steps: finite loss, declared metrics logged, the encoder moved, two steps counted."""
    compile_mode(model, mode)
    before = weights_of(model.encoder)
    history = model.fit(x, y, epochs=1, verbose=0, **fit_kwargs)
    logs = history.history
    assert np.all(np.isfinite(logs["loss"])), logs
    expected = {"loss", *model.loss_terms} | ({"z_std"} if model.monitored_output else set())
    assert set(logs) == expected, (sorted(logs), sorted(expected))
    after = weights_of(model.encoder)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, after)), "the encoder did not move"
    assert int(model.step) == 2 == int(model.optimizer.iterations)
    return history


def check_config_round_trip(model):
    """`from_config(get_config())` builds the same method with the same options."""
    config = model.get_config()
    clone = type(model).from_config(config)
    assert type(clone) is type(model)
    again = clone.get_config()
    for name in model.hyperparameters():
        if name not in ("views", "encoder", "text_encoder", "tokenizer"):
            assert again[name] == config[name], (name, again[name], config[name])


def check_saving(model, x, y, fit_kwargs, path):
    """A whole-model `.keras` file restores every variable and the optimizer, and training goes on."""
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    # Same variables in the same order (their auto-generated names may differ).
    names = [v.path for v in model.weights]
    assert len(loaded.weights) == len(names)
    for name, a, b in zip(names, model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations)
    np.testing.assert_allclose(
        loaded.encoder.predict(x.astype("float32") / 255.0, verbose=0),
        model.encoder.predict(x.astype("float32") / 255.0, verbose=0),
        atol=1e-5,
    )
    history = loaded.fit(x, y, epochs=1, verbose=0, **fit_kwargs)
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(loaded.step) == 4
    return loaded


def run_method_test(make, x, tmp_path, y=None, fit_kwargs=None, modes=("default",)):
    """Everything a method must do, on `make()` models trained on `x` (two batches).

    Args:
        make: a function returning a new, uncompiled method on a tiny encoder.
        x: uint8 training images (two batches of `fit_kwargs["batch_size"]`).
        y: what `fit` gets as `y` (CLIP's texts), or None.
        tmp_path: where the `.keras` file goes.
        fit_kwargs: passed to `fit` (default `batch_size=8`).
        modes: compile modes to train in ("default", "eager", "jit").

    Returns:
        The model loaded back from its `.keras` file.
    """
    fit_kwargs = {"batch_size": 8, **(fit_kwargs or {})}
    model = make()
    check_build_and_views(model)
    check_two_steps(model, x, y, fit_kwargs, modes[0])
    for mode in modes[1:]:
        check_two_steps(make(), x, y, fit_kwargs, mode)
    check_config_round_trip(model)
    return check_saving(model, x, y, fit_kwargs, os.path.join(str(tmp_path), "model.keras"))
