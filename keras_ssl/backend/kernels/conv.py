"""2-D convolutions as chunked matmuls on JAX's CPU backend, where XLA's own transposes every activation."""

import keras

from keras_ssl.backend.probes import accelerator, backend

# ------------------------------------------------ convolution as chunked matmuls (JAX on CPU)
# XLA:CPU computes a convolution's kernel gradient as a convolution with the batch as its
# feature dimension, transposing every saved activation and output gradient first: 1.3-1.5 s
# of a 3 s ResNet-18 x0.25 forward+backward (profiled, `benchmarks/jax_conv.py`). Here the
# kernel gradient is `patches^T @ dy`, a few images at a time so the patches stay in cache;
# stride-2 convolutions are chunked im2col matmuls both ways, 1x1 ones a strided slice and a
# dot; stride-1 3x3 forward and input gradient stay XLA's (fastest there).
_CHUNK_BYTES = 4 << 20  # patches per chunk: fits the L2/L3 of a CPU core
_CONV = None


def fast_conv(x, kernel, strides, padding, data_format, dilation_rate):
    """A 2-D convolution faster than XLA's on the JAX CPU backend, or None where it is not.

    The same function as `keras.ops.conv` (Keras's "same" padding, the
    extra pixel after), and its exact gradient, for channels-last 1x1 and
    3x3 kernels without dilation on one CPU device: 1.4-1.6x the ResNet's
    jitted forward+backward (`benchmarks/jax_conv.py`). None elsewhere (other
    backends, GPUs, a `keras.distribution` set, where a scan over a sharded
    batch would gather it), and the caller takes `keras.ops.conv`.

    Args:
        x: `(B, H, W, C)` inputs.
        kernel: `(kh, kw, C, O)`.
        strides, dilation_rate: pairs of ints.
        padding: "same" or "valid".
        data_format: "channels_last" or "channels_first".

    Returns:
        `(B, H', W', O)`, or None.

    Example:
        >>> x, kernel = ops.convert_to_tensor(images), keras.random.normal((3, 3, 3, 8), seed=0)
        >>> y = keras_ssl.backend.fast_conv(x, kernel, (2, 2), "same", "channels_last", (1, 1))
        >>> tuple(y.shape)   # None on other backends and devices
        (8, 8, 8, 8)
        >>> bool(np.allclose(y, ops.conv(x, kernel, strides=2, padding="same"), atol=1e-4))
        True
    """
    if (
        backend() != "jax"
        or data_format != "channels_last"
        or tuple(dilation_rate) != (1, 1)
        or tuple(kernel.shape[:2]) not in ((1, 1), (3, 3))
        or len(x.shape) != 4
        or keras.distribution.distribution() is not None
        or accelerator() != "cpu"
    ):
        return None
    global _CONV
    if _CONV is None:
        _CONV = _jax_conv()
    strides = tuple(strides)
    pads = _same_pads(x.shape[1:3], kernel.shape[:2], strides) if padding == "same" else ((0, 0), (0, 0))
    out = _out_size(x.shape[1:3], kernel.shape[:2], strides, pads)
    if min(out) < 1 or _chunk(x, out, kernel) is None:
        return None
    return _CONV(x, kernel, strides, pads)


def _same_pads(size, kernel, strides):
    pads = []
    for n, k, s in zip(size, kernel, strides):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _out_size(size, kernel, strides, pads):
    return tuple((n + p[0] + p[1] - k) // s + 1 for n, k, s, p in zip(size, kernel, strides, pads))


def _chunk(x, out, kernel):
    """Images per chunk: a divisor of the batch with about `_CHUNK_BYTES` of patches, or None."""
    per_image = out[0] * out[1] * kernel.shape[0] * kernel.shape[1] * kernel.shape[2] * x.dtype.itemsize
    n = x.shape[0]
    want = min(n, max(1, _CHUNK_BYTES // per_image))
    size = max(d for d in range(1, want + 1) if n % d == 0)
    return size if 4 * size >= want else None  # a prime batch: many tiny chunks; XLA's is better


def _jax_conv():
    import jax
    import jax.numpy as jnp
    from jax import lax

    numbers = ("NHWC", "HWIO", "NHWC")

    def patches(x, kh, kw, strides, pads):
        # (B, H', W', kh*kw*C) in (i, j, c) order, the rows of kernel.reshape(kh*kw*C, O)
        (sh, sw), (ho, wo) = strides, _out_size(x.shape[1:3], (kh, kw), strides, pads)
        xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
        cols = [
            lax.slice(
                xp,
                (0, i, j, 0),
                (xp.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, xp.shape[3]),
                (1, sh, sw, 1),
            )
            for i in range(kh)
            for j in range(kw)
        ]
        return jnp.concatenate(cols, -1) if len(cols) > 1 else cols[0]

    def per_chunk(f, size, *arrays):
        split = [a.reshape((a.shape[0] // size, size) + a.shape[1:]) for a in arrays]
        y = lax.map(lambda t: f(*t), tuple(split))
        return y.reshape((-1,) + y.shape[2:])

    def forward_mm(x, w, strides, pads):
        kh, kw, c, o = w.shape
        return jnp.dot(patches(x, kh, kw, strides, pads), w.reshape(kh * kw * c, o))

    def input_grad_mm(dy, w, x_shape, strides, pads):
        # dy @ W^T gives each tap's contribution; each is padded into place (interior
        # padding = stride - 1) and summed: col2im.
        kh, kw, c, o = w.shape
        (sh, sw), (b, h, wd, _), (ho, wo) = strides, x_shape, dy.shape[1:3]
        hp, wp = h + sum(pads[0]), wd + sum(pads[1])
        taps = jnp.dot(dy, w.reshape(kh * kw * c, o).T).reshape(b, ho, wo, kh * kw, c)
        total = 0
        for t in range(kh * kw):
            i, j = divmod(t, kw)
            config = (
                (0, 0, 0),
                (i, hp - i - sh * (ho - 1) - 1, sh - 1),
                (j, wp - j - sw * (wo - 1) - 1, sw - 1),
                (0, 0, 0),
            )
            total = total + lax.pad(taps[:, :, :, t, :], jnp.zeros((), dy.dtype), config)
        return total[:, pads[0][0] : pads[0][0] + h, pads[1][0] : pads[1][0] + wd, :]

    def kernel_grad_mm(x, dy, shape, strides, pads, size):
        kh, kw, c, o = shape
        k = kh * kw * c
        xs, ds = x.reshape((-1, size) + x.shape[1:]), dy.reshape((-1, size) + dy.shape[1:])

        def body(total, chunk):
            p = patches(chunk[0], kh, kw, strides, pads).reshape(-1, k)
            return total + lax.dot_general(p, chunk[1].reshape(-1, o), (((0,), (0,)), ((), ()))), None

        return lax.scan(body, jnp.zeros((k, o), x.dtype), (xs, ds))[0].reshape(shape)

    def xla(x, w, strides, pads):
        return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=numbers)

    def _forward(x, w, strides, pads):
        kh, kw = w.shape[:2]
        if kh * kw > 1 and strides == (1, 1):
            return xla(x, w, strides, pads)
        if kh * kw == 1:
            return forward_mm(x, w, strides, pads)
        size = _chunk(x, _out_size(x.shape[1:3], (kh, kw), strides, pads), w)
        return per_chunk(lambda xc: forward_mm(xc, w, strides, pads), size, x)

    def fwd(x, w, strides, pads):
        return _forward(x, w, strides, pads), (x, w)

    def bwd(strides, pads, saved, dy):
        x, w = saved
        kh, kw = w.shape[:2]
        size = _chunk(x, dy.shape[1:3], w)
        if kh * kw > 1 and strides == (1, 1):
            dx = jax.vjp(lambda t: xla(t, w, strides, pads), x)[1](dy)[0]
        elif kh * kw == 1:
            dx = input_grad_mm(dy, w, x.shape, strides, pads)
        else:
            dx = per_chunk(lambda dc: input_grad_mm(dc, w, (dc.shape[0],) + x.shape[1:], strides, pads), size, dy)
        return dx, kernel_grad_mm(x, dy, w.shape, strides, pads, size)

    conv = jax.custom_vjp(_forward, nondiff_argnums=(2, 3))
    conv.defvjp(fwd, bwd)
    return conv
