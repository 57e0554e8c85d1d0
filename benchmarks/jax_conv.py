"""JAX on XLA:CPU: a ResNet's convolutions as chunked matmuls, against XLA's own (a study).

    python benchmarks/jax_conv.py                    # width 0.25, batch 512, 4 rounds
    python benchmarks/jax_conv.py --width 1.0 --rounds 2
    python benchmarks/jax_conv.py --check            # equal outputs and gradients, 48 shapes

Why: on a 2-core CPU keras_ssl's JAX step is about half PyTorch's (README, "Where the time
goes"). Profiled (width 0.25, batch 512): of a ~3 s forward+backward, 1.3-1.5 s is XLA's
`transpose_copy_fusion`: XLA:CPU computes each kernel gradient as a convolution with the batch
as its feature dimension, so it transposes every saved activation to (C, H, W, N) and every
output gradient to (H, W, N, O), fused with the BatchNorm/ReLU producers that run slowly.
Here the kernel gradient is instead `patches^T @ dy`, a few images at a time (`lax.scan` over
~4 MB of patches, which stay in cache), the stride-2 3x3 convolutions are chunked im2col
matmuls both ways, the 1x1 ones a strided slice and a dot, and the stride-1 3x3 forward and
input gradient stay XLA's. Measured on the 2-core AMD EPYC (2026-12-04, a loaded machine,
best of 3-4 rounds): the whole ResNet-18's jitted forward+backward 1.4-1.6x faster at width
0.25 and 1.55x at width 1.0; with YNNPACK off as well
(`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=`) 2.3x at width 1.0 but no gain at 0.25 on
a quiet machine, and twice the float32 gradient error. Gradients equal XLA's to 6e-7 relative
per convolution (`--check`); against float64 both are 4e-3 (worst leaf, relative L2, the
training-mode BatchNorm amplifies rounding).

Not tried in the library yet: it needs a Conv2D subclass with this JAX path (as
`keras_ssl.layers.BatchNormalization` has for the fused kernels), single-device CPU only (a
scan over a sharded batch would gather it; on GPUs cuDNN is the fast path), and its compile
time in the test suite measured. What did not help (per-layer and end to end, same script):
unchunked im2col (0.42x end to end: ~300 MB of patches per layer), `conv_general_dilated_patches`
(2-4x slower than slices), 3x3 as nine shifted 1x1 matmuls (0.71-1.0x), everything as matmuls
(0.79x), NCHW/OIHW dimension numbers (1.2-1.8x slower: XLA adds transposes), wrapping XLA's own
convolution in `custom_vjp` (0.89x), and the XLA flags `xla_cpu_enable_fast_math`,
`xla_cpu_multi_thread_eigen=false`, `xla_cpu_prefer_vector_width=512`, `xla_cpu_use_onednn`,
`xla_cpu_experimental_onednn_custom_call` and `xla_cpu_experimental_xnn_graph_fusion_mode=GREEDY`
(each within 2 %).
"""

import argparse
import functools
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")
CHUNK_BYTES = 4 << 20


def _pads(in_hw, k_hw, strides, padding):
    if padding.lower() == "valid":
        return ((0, 0), (0, 0))
    out = []
    for n, k, s in zip(in_hw, k_hw, strides):  # TF/Keras "same": extra pad after
        tot = max((-(-n // s) - 1) * s + k - n, 0)
        out.append((tot // 2, tot - tot // 2))
    return tuple(out)


def _out_hw(in_hw, k_hw, strides, pads):
    return tuple((n + p[0] + p[1] - k) // s + 1 for n, k, s, p in zip(in_hw, k_hw, strides, pads))


def _patches(x, kh, kw, strides, pads):
    """(N, Ho, Wo, kh*kw*C), feature order (i, j, c) = w.reshape(kh*kw*C, O) rows."""
    (sh, sw), (Ho, Wo) = strides, _out_hw(x.shape[1:3], (kh, kw), strides, pads)
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    cols = [lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + sh * (Ho - 1) + 1, j + sw * (Wo - 1) + 1, xp.shape[3]),
                      (1, sh, sw, 1)) for i in range(kh) for j in range(kw)]
    return jnp.concatenate(cols, -1) if len(cols) > 1 else cols[0]


def _chunk(n, item_bytes):
    b = min(n, max(1, CHUNK_BYTES // item_bytes))
    while n % b:
        b -= 1
    return b


def _map_chunks(f, B, *arrays):
    """f over batch chunks of B images (lax.map), results re-joined along the batch."""
    split = [a.reshape((a.shape[0] // B, B) + a.shape[1:]) for a in arrays]
    y = lax.map(lambda t: f(*t), tuple(split))
    return y.reshape((-1,) + y.shape[2:])


def _fwd_mm(x, w, strides, pads):
    kh, kw, C, O = w.shape
    return jnp.dot(_patches(x, kh, kw, strides, pads), w.reshape(kh * kw * C, O))


def _dx_mm(dy, w, x_shape, strides, pads):
    """dcols = dy @ W^T, every tap padded (interior = stride - 1) into place and summed (col2im)."""
    kh, kw, C, O = w.shape
    (sh, sw), (N, H, W, _), (Ho, Wo) = strides, x_shape, dy.shape[1:3]
    Hp, Wp = H + sum(pads[0]), W + sum(pads[1])
    dcols = jnp.dot(dy, w.reshape(kh * kw * C, O).T).reshape(N, Ho, Wo, kh * kw, C)
    acc = 0
    for t in range(kh * kw):
        i, j = divmod(t, kw)
        cfg = ((0, 0, 0), (i, Hp - i - sh * (Ho - 1) - 1, sh - 1), (j, Wp - j - sw * (Wo - 1) - 1, sw - 1), (0, 0, 0))
        acc = acc + lax.pad(dcols[:, :, :, t, :], jnp.zeros((), dy.dtype), cfg)
    return acc[:, pads[0][0]:pads[0][0] + H, pads[1][0]:pads[1][0] + W, :]


def _dw_mm(x, dy, kshape, strides, pads):
    """sum over batch chunks of patches^T @ dy (patches stay in cache)."""
    kh, kw, C, O = kshape
    K = kh * kw * C
    B = _chunk(x.shape[0], dy.shape[1] * dy.shape[2] * K * 4)
    xs = x.reshape((-1, B) + x.shape[1:])
    ds = dy.reshape((-1, B) + dy.shape[1:])

    def body(acc, t):
        p = _patches(t[0], kh, kw, strides, pads).reshape(-1, K)
        return acc + lax.dot_general(p, t[1].reshape(-1, O), (((0,), (0,)), ((), ()))), None

    return lax.scan(body, jnp.zeros((K, O), x.dtype), (xs, ds))[0].reshape(kshape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, pads):
    kh, kw, C, _ = w.shape
    if kh * kw > 1 and strides == (1, 1):
        return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_DN)
    if kh * kw == 1:
        return _fwd_mm(x, w, strides, pads)
    Ho, Wo = _out_hw(x.shape[1:3], (kh, kw), strides, pads)
    B = _chunk(x.shape[0], Ho * Wo * kh * kw * C * 4)
    return _map_chunks(lambda xc: _fwd_mm(xc, w, strides, pads), B, x)


def _conv_fwd(x, w, strides, pads):
    return _conv(x, w, strides, pads), (x, w)


def _conv_bwd(strides, pads, res, dy):
    x, w = res
    kh, kw, C, _ = w.shape
    if kh * kw > 1 and strides == (1, 1):
        _, vjp = jax.vjp(lambda t: lax.conv_general_dilated(t, w, strides, pads, dimension_numbers=_DN), x)
        dx = vjp(dy)[0]
    elif kh * kw == 1:
        dx = _dx_mm(dy, w, x.shape, strides, pads)
    else:
        B = _chunk(x.shape[0], dy.shape[1] * dy.shape[2] * kh * kw * C * 4)
        dx = _map_chunks(lambda dc: _dx_mm(dc, w, (dc.shape[0],) + x.shape[1:], strides, pads), B, dy)
    return dx, _dw_mm(x, dy, w.shape, strides, pads)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d(x, kernel, strides=1, padding="same"):
    """Keras-semantics 2-D conv: x (N, H, W, C), kernel (kh, kw, C, O), padding "same"/"valid"."""
    strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
    return _conv(x, kernel, strides, _pads(x.shape[1:3], kernel.shape[:2], strides, padding))


# ------------------------------------------------------------ a CIFAR ResNet-18 in pure JAX
def xla_conv(x, kernel, strides=1, padding="same"):
    strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
    return lax.conv_general_dilated(x, kernel, strides, _pads(x.shape[1:3], kernel.shape[:2], strides, padding),
                                    dimension_numbers=_DN)


def init(width, key):
    base = max(16, int(round(64 * width)))
    keys = iter(jax.random.split(key, 64))
    params = {}

    def conv(name, k, cin, cout):
        params[name] = {"w": jax.random.normal(next(keys), (k, k, cin, cout)) * np.sqrt(2 / (k * k * cin)),
                        "g": 1 + 0.1 * jax.random.normal(next(keys), (cout,)),
                        "b": 0.1 * jax.random.normal(next(keys), (cout,))}

    conv("stem", 3, 3, base)
    cin = base
    for stage in range(4):
        for i in range(2):
            cout, stride = base * 2**stage, 2 if stage > 0 and i == 0 else 1
            conv(f"s{stage}b{i}_1", 3, cin, cout)
            conv(f"s{stage}b{i}_2", 3, cout, cout)
            if stride != 1 or cin != cout:
                conv(f"s{stage}b{i}_p", 1, cin, cout)
            cin = cout
    return params


def forward(params, x, conv):
    def conv_bn(name, x, stride):
        y = conv(x, params[name]["w"], stride, "same")
        mean, var = jnp.mean(y, axis=(0, 1, 2)), jnp.var(y, axis=(0, 1, 2))
        return (y - mean) * lax.rsqrt(var + 1e-5) * params[name]["g"] + params[name]["b"]

    x = jax.nn.relu(conv_bn("stem", x, 1))
    for stage in range(4):
        for i in range(2):
            stride = 2 if stage > 0 and i == 0 else 1
            y = conv_bn(f"s{stage}b{i}_2", jax.nn.relu(conv_bn(f"s{stage}b{i}_1", x, stride)), 1)
            shortcut = conv_bn(f"s{stage}b{i}_p", x, stride) if f"s{stage}b{i}_p" in params else x
            x = jax.nn.relu(y + shortcut)
    return jnp.mean(x, axis=(1, 2))


def loss(params, x, projection, conv):
    return jnp.mean(jnp.tanh(forward(params, x, conv) @ projection) ** 2)


def check():
    """Outputs and both gradients against XLA's convolution over 48 shapes, several chunks each."""
    global CHUNK_BYTES
    CHUNK_BYTES, worst = 20000, 0.0
    rng = np.random.default_rng(0)
    for n, size, k, stride, padding in itertools.product([6, 7], [8, 7, 5], [1, 3], [1, 2], ["same", "valid"]):
        x = jnp.asarray(rng.standard_normal((n, size, size, 5)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((k, k, 5, 6)), jnp.float32)
        y0, vjp0 = jax.vjp(jax.jit(lambda x, w: xla_conv(x, w, stride, padding)), x, w)
        y1, vjp1 = jax.vjp(jax.jit(lambda x, w: conv2d(x, w, stride, padding)), x, w)
        dy = jnp.asarray(rng.standard_normal(y0.shape), jnp.float32)
        for a, b in zip((y1,) + vjp1(dy), (y0,) + vjp0(dy)):
            worst = max(worst, float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))))
    print(f"chunked-matmul convolution vs XLA's, 48 shapes: max relative difference {worst:.1e}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=512, help="views per step (SimCLR: 2 x 256 images)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    if args.check:
        return check()
    params = init(args.width, jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (args.batch_size, 32, 32, 3))
    dim = params["s3b1_2"]["w"].shape[-1]
    projection = jax.random.normal(jax.random.PRNGKey(2), (dim, 128)) / np.sqrt(dim)
    steps = {name: jax.jit(jax.value_and_grad(functools.partial(loss, conv=conv)))
             for name, conv in (("xla", xla_conv), ("chunked matmul", conv2d))}
    results = {name: jax.block_until_ready(step(params, x, projection)) for name, step in steps.items()}
    best = {name: float("inf") for name in steps}
    for _ in range(args.rounds):  # alternating, best of rounds: other load only slows a run
        for name, step in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(step(params, x, projection))
            best[name] = min(best[name], time.perf_counter() - start)
    ref = jax.tree.leaves(results["xla"][1])
    error = max(float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
                for a, b in zip(jax.tree.leaves(results["chunked matmul"][1]), ref))
    print(f"ResNet-18 width {args.width}, {args.batch_size} views, jitted forward+backward, best of {args.rounds}")
    for name in steps:
        print(f"{name:16s} {best[name] * 1e3:8.0f} ms  {best['xla'] / best[name]:.2f}x")
    print(f"gradients: worst leaf relative L2 difference {error:.1e}")


if __name__ == "__main__":
    main()
