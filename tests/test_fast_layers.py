"""keras_ssl's BatchNormalization and Conv2D: Keras's functions, by faster kernels.

References: batch normalisation and its gradient written from Ioffe &
Szegedy (2015), Algorithm 1 and section 3, in NumPy; the backend's own
convolution (`keras.ops.conv`) and its gradients; and Keras's own layers in
float64 with the same weights (via `backbones.plain_keras`) for a whole
encoder's gradients.
"""

import keras
import numpy as np
import pytest
from conftest import BACKEND, grads, outputs_without_keras_ssl, random_images

import keras_ssl
from keras_ssl import backbones, distribute
from keras_ssl.layers import BatchNormalization, Conv2D

EPS = 1e-5


def reference(x, gamma, beta, axis, dy):
    """Forward, batch mean and biased variance, and the gradients (x, gamma, beta) of sum(y * dy)."""
    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    shape = [1] * x.ndim
    shape[axis] = -1
    n = x.size // x.shape[axis]
    mean, var = x.mean(axes), x.var(axes)
    invstd = 1.0 / np.sqrt(var + EPS)
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    y = gamma.reshape(shape) * xhat + beta.reshape(shape)
    dxhat = dy * gamma.reshape(shape)
    dx = (
        invstd.reshape(shape)
        / n
        * (n * dxhat - dxhat.sum(axes).reshape(shape) - xhat * (dxhat * xhat).sum(axes).reshape(shape))
    )
    return y, mean, var, (dx, (dy * xhat).sum(axes), dy.sum(axes))


CASES = {  # shape, channel axis
    "images_channels_last": ((6, 5, 4, 3), -1),
    "images_channels_first": ((6, 3, 5, 4), 1),
    "features": ((12, 7), -1),
}


def _data(shape, axis, seed=0):
    rng = np.random.default_rng(seed)
    channels = shape[axis]
    x = (rng.normal(size=shape) * 3 + 1.5).astype("float32")
    gamma = rng.uniform(0.5, 2.0, channels).astype("float32")
    beta = rng.normal(size=channels).astype("float32")
    dy = rng.normal(size=shape).astype("float32")
    return x, gamma, beta, dy


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_kernel_matches_the_papers_forward_and_gradient(case):
    shape, axis = CASES[case]
    x, gamma, beta, dy = _data(shape, axis)
    y_ref, mean_ref, var_ref, grads_ref = reference(x.astype("float64"), gamma, beta, axis, dy)
    fused = distribute.fused_batch_norm(
        keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(gamma), keras.ops.convert_to_tensor(beta), axis, EPS
    )
    if fused is None:  # the backend has no fused kernel here: the layer takes Keras's path
        assert BACKEND == "jax" or (BACKEND == "tensorflow" and axis == 1), (BACKEND, case)
        return
    y, mean, var = (keras.ops.convert_to_numpy(t) for t in fused)
    np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(mean, mean_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(var, var_ref, rtol=1e-5)

    def loss(x_, g_, b_):
        return keras.ops.sum(distribute.fused_batch_norm(x_, g_, b_, axis, EPS)[0] * keras.ops.convert_to_tensor(dy))

    for got, want in zip(grads(loss, x, gamma, beta), grads_ref):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("affine", [True, False])
def test_layer_trains_like_the_paper_and_updates_moving_statistics_as_keras(case, affine):
    shape, axis = CASES[case]
    x, gamma, beta, dy = _data(shape, axis, seed=1)
    layer = BatchNormalization(axis=axis, momentum=0.9, epsilon=EPS, center=affine, scale=affine)
    layer.build(shape)
    moving_mean = np.random.default_rng(2).normal(size=shape[axis]).astype("float32")
    moving_var = np.random.default_rng(3).uniform(0.5, 2, shape[axis]).astype("float32")
    layer.moving_mean.assign(moving_mean)
    layer.moving_variance.assign(moving_var)
    if affine:
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    else:
        gamma, beta = np.ones_like(gamma), np.zeros_like(beta)
    y_ref, mean_ref, var_ref, _ = reference(x.astype("float64"), gamma, beta, axis, dy)
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    np.testing.assert_allclose(y, y_ref, atol=1e-5, rtol=1e-5)
    # Keras's rule, with the biased batch variance (as keras.ops.moments).
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.9 * moving_mean + 0.1 * mean_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 * moving_var + 0.1 * var_ref, rtol=1e-5)
    # Inference uses the moving statistics, as Keras's layer.
    plain = keras.layers.BatchNormalization.from_config(layer.get_config())
    plain.build(shape)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x, training=False)),
        keras.ops.convert_to_numpy(plain(x, training=False)),
        atol=1e-6,
    )


def test_a_single_value_per_channel_takes_keras_path():
    layer = BatchNormalization(epsilon=EPS)
    out = keras.ops.convert_to_numpy(layer(np.ones((1, 4), "float32") * 3, training=True))
    np.testing.assert_allclose(out, 0.0, atol=1e-6)  # x - mean = 0, variance 0 (PyTorch's kernel refuses it)


def test_backbones_and_heads_use_it():
    encoder = backbones.resnet18((16, 16, 3), width=0.25)
    model = keras_ssl.SimCLR(encoder, hidden_dim=16, projection_dim=8)
    model.build()
    layers = keras_ssl.keras_compat.sublayers(model)
    for keras_class, ours in ((keras.layers.BatchNormalization, BatchNormalization), (keras.layers.Conv2D, Conv2D)):
        found = [l for l in layers if isinstance(l, keras_class)]
        assert found and all(isinstance(l, ours) for l in found), keras_class


def _encoder_gradients(model, x, r, jit=None):
    """Gradients of sum((normalize(model(x)) @ r)^2) for the model's trainable weights, in training mode.

    `jit` (JAX only): compiles the gradient function, e.g. `jax.jit` or `distribute.cpu_jit()`.
    """

    def loss_of(features):
        z = features / keras.ops.norm(features, axis=1, keepdims=True)
        return keras.ops.sum(keras.ops.matmul(z, keras.ops.cast(r, z.dtype)) ** 2)

    if BACKEND == "jax":
        import jax

        def loss(trainable):
            out, _ = model.stateless_call(trainable, [v.value for v in model.non_trainable_variables], x, training=True)
            return loss_of(out)

        grad = (jit or (lambda f: f))(jax.grad(loss))
        return [np.asarray(g) for g in grad([v.value for v in model.trainable_variables])]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss_of(model(x, training=True))
        return [g.numpy() for g in tape.gradient(value, model.trainable_variables)]
    for v in model.trainable_variables:
        v.value.grad = None
    loss_of(model(x, training=True)).backward()
    return [v.value.grad.numpy() for v in model.trainable_variables]


def test_encoder_gradients_are_as_exact_as_keras_batch_norm():
    """Against float64 Keras: our float32 gradients within the error Keras's own float32 layer makes."""
    if BACKEND == "jax":  # no float64 without jax_enable_x64: Keras's float32 layers are the reference
        return _compare_with_keras_layers_in_float32()
    rng = np.random.default_rng(0)
    x, r = rng.uniform(0, 1, (32, 16, 16, 3)), rng.normal(size=(128, 32))
    # Keras's init, the draw this test has always used: some draws leave a BN channel almost constant,
    # where float32 gradients err by 1e-3 in every implementation (Keras's layers included).
    ours = backbones.resnet18((16, 16, 3), width=0.25, initializer="keras")
    plain = backbones.plain_keras(ours)  # same weights, Keras's layer
    assert not any(isinstance(l, (BatchNormalization, Conv2D)) for l in keras_ssl.keras_compat.sublayers(plain))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        exact = backbones.plain_keras(backbones.resnet18((16, 16, 3), width=0.25, initializer="keras"))
        exact.set_weights([w.astype("float64") for w in ours.get_weights()])
        want = np.concatenate([g.ravel() for g in _encoder_gradients(exact, x, r)])
    finally:
        keras.config.set_dtype_policy(previous)

    def error(model):
        got = np.concatenate([g.ravel() for g in _encoder_gradients(model, x.astype("float32"), r)])
        return np.linalg.norm(got - want) / np.linalg.norm(want)

    ours_error, keras_error = error(ours), error(plain)
    # Measured (relative to the gradient's norm): PyTorch 5e-6 ours, 1e-3 Keras's; TensorFlow 2e-3
    # ours, 1e-2 Keras's (its float32 oneDNN convolutions). A wrong gradient term is of order 1.
    assert ours_error < max(3 * keras_error, 1e-5) and ours_error < 0.05, (ours_error, keras_error)


def test_plain_keras_copy_loads_without_keras_ssl(tmp_path):
    encoder = backbones.tiny_encoder((16, 16, 3), width=8)
    path = str(tmp_path / "encoder.keras")
    backbones.plain_keras(encoder).save(path)
    x = random_images(4).astype("float32") / 255.0
    np.testing.assert_allclose(outputs_without_keras_ssl(path, x), keras.ops.convert_to_numpy(encoder(x)), atol=1e-5)
    with pytest.raises(TypeError, match="functional or Sequential"):
        backbones.plain_keras(keras_ssl.SimCLR(encoder))


def _compare_with_keras_layers_in_float32():
    rng = np.random.default_rng(0)
    x, r = rng.uniform(0, 1, (32, 16, 16, 3)).astype("float32"), rng.normal(size=(128, 32))
    ours = backbones.resnet18((16, 16, 3), width=0.25, initializer="keras")
    plain = backbones.plain_keras(ours)
    want = np.concatenate([g.ravel() for g in _encoder_gradients(plain, x, r)])
    got = np.concatenate([g.ravel() for g in _encoder_gradients(ours, x, r)])
    # Measured 1.2e-6 (each convolution agrees to 6e-7; BatchNorm amplifies rounding).
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


CONVS = [(k, s, p, n, size) for k in (1, 3) for s in (1, 2) for p in ("same", "valid") for n, size in ((6, 8), (5, 7))]


@pytest.mark.parametrize("k,strides,padding,n,size", CONVS)
def test_fast_conv_equals_the_backends_convolution_and_gradients(k, strides, padding, n, size, monkeypatch):
    monkeypatch.setattr(keras_ssl.backend.kernels.conv, "_CHUNK_BYTES", 700)  # several chunks even for these small maps
    rng = np.random.default_rng(k * 10 + strides)
    x = rng.normal(size=(n, size, size, 5)).astype("float32")
    w = rng.normal(size=(k, k, 5, 6)).astype("float32")

    def fast(x_, w_):
        return distribute.fast_conv(x_, w_, (strides, strides), padding, "channels_last", (1, 1))

    def reference(x_, w_):
        return keras.ops.conv(x_, w_, strides=strides, padding=padding)

    if fast(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(w)) is None:
        assert BACKEND != "jax"  # JAX on CPU has it; other backends' own convolution is fast
        return
    want = keras.ops.convert_to_numpy(reference(x, w))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(fast(x, w)), want, atol=1e-5, rtol=1e-5)
    dy = rng.normal(size=want.shape).astype("float32")
    got = grads(lambda x_, w_: keras.ops.sum(fast(x_, w_) * dy), x, w)
    for a, b in zip(got, grads(lambda x_, w_: keras.ops.sum(reference(x_, w_) * dy), x, w)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


def test_fast_conv_leaves_what_it_does_not_cover_to_keras():
    x, w = keras.ops.ones((4, 8, 8, 3)), keras.ops.ones((5, 5, 3, 2))
    assert distribute.fast_conv(x, w, (1, 1), "same", "channels_last", (1, 1)) is None  # 5x5
    w3 = keras.ops.ones((3, 3, 3, 2))
    assert distribute.fast_conv(x, w3, (1, 1), "same", "channels_first", (1, 1)) is None
    assert distribute.fast_conv(x, w3, (1, 1), "same", "channels_last", (2, 2)) is None  # dilated
    layer = Conv2D(4, 3, padding="same", groups=1)
    plain = keras.layers.Conv2D.from_config(layer.get_config())
    images = random_images(4).astype("float32") / 255.0
    layer.build(images.shape)
    plain.build(images.shape)
    plain.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(images)), keras.ops.convert_to_numpy(plain(images)), atol=1e-5
    )


@pytest.mark.skipif(BACKEND != "jax", reason="XLA:CPU compiler options: JAX only")
def test_cpu_jit_gradients_are_as_exact_as_xla_defaults():
    """A ResNet's gradients compiled with `XLA_CPU_OPTIONS`, against float64 (JAX with x64)."""
    import jax

    rng = np.random.default_rng(0)
    x, r = rng.uniform(0, 1, (32, 16, 16, 3)), rng.normal(size=(128, 32))
    model = backbones.resnet18((16, 16, 3), width=0.25, initializer="keras")

    def gradients(net, inputs, jit):
        return np.concatenate([np.asarray(g, np.float64).ravel() for g in _encoder_gradients(net, inputs, r, jit)])

    previous = keras.config.dtype_policy()
    with jax.enable_x64(True):
        keras.config.set_dtype_policy("float64")
        try:
            exact = backbones.plain_keras(backbones.resnet18((16, 16, 3), width=0.25, initializer="keras"))
            exact.set_weights([w.astype("float64") for w in model.get_weights()])
            want = gradients(exact, x, jax.jit)
        finally:
            keras.config.set_dtype_policy(previous)

    def error(jit):
        return np.linalg.norm(gradients(model, x.astype("float32"), jit) - want) / np.linalg.norm(want)

    jit = distribute.cpu_jit()
    assert jit is not None  # this jaxlib accepts the options
    ours, xla_default = error(jit), error(jax.jit)
    # Measured 1.8e-3 both (Keras's float32 BatchNorm dominates); a wrong kernel is of order 1.
    assert ours < max(2 * xla_default, 1e-5), (ours, xla_default)


def test_cpu_jit_applies_only_where_it_can(monkeypatch):
    if BACKEND != "jax":
        assert distribute.cpu_jit() is None
        return
    assert distribute.cpu_jit() is not None
    monkeypatch.setattr(keras_ssl.backend.compile, "XLA_CPU_OPTIONS", {})
    assert distribute.cpu_jit() is None
    # an XLA that does not know an option: XLA's defaults, not an error in fit
    monkeypatch.setattr(keras_ssl.backend.compile, "XLA_CPU_OPTIONS", {"xla_cpu_no_such_option_in_any_xla": "1"})
    assert distribute.cpu_jit() is None
    monkeypatch.undo()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=keras.distribution.list_devices()[:1]))
    try:
        assert distribute.cpu_jit() is None  # a sharded step keeps Keras's own jit
    finally:
        keras.distribution.set_distribution(None)


@pytest.mark.skipif(BACKEND != "jax", reason="XLA:CPU compiler options: JAX only")
@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_fit_and_evaluate_compile_with_cpu_jit(steps_per_execution, monkeypatch):
    calls = []
    original = keras_ssl.backend.cpu_jit  # what the engine's compile path (keras_compat) calls

    def spy():
        jit = original()
        calls.append(jit is not None)
        return jit

    monkeypatch.setattr(keras_ssl.backend, "cpu_jit", spy)
    images = random_images(16)
    model = keras_ssl.SimCLR(backbones.tiny_encoder((16, 16, 3), width=8), image_size=16, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1), steps_per_execution=steps_per_execution)
    before = [w.copy() for w in model.encoder.get_weights()]
    history = model.fit(images, batch_size=8, epochs=1, verbose=0)
    assert calls == [True] and len(history.history["loss"]) == 1
    assert any(not np.allclose(a, b) for a, b in zip(before, model.encoder.get_weights()))
    assert np.isfinite(model.evaluate(images, batch_size=8, verbose=0, return_dict=True)["loss"])
    assert calls == [True, True]
