"""JAX on XLA:CPU: a ResNet's convolutions as chunked matmuls, against XLA's own (a study).

    python benchmarks/jax_conv.py                    # width 0.25, batch 512, 4 rounds
    python benchmarks/jax_conv.py --width 1.0 --rounds 2

Why: on a 2-core CPU keras_ssl's JAX step is about half PyTorch's (README, "Where the time
goes"). Profiled (width 0.25, batch 512): of a ~3 s forward+backward, 1.3-1.5 s is XLA's
`transpose_copy_fusion`: XLA:CPU computes each kernel gradient as a convolution with the batch
as its feature dimension, so it transposes every saved activation to (C, H, W, N) and every
output gradient to (H, W, N, O), fused with the BatchNorm/ReLU producers that run slowly.
Here the kernel gradient is instead `patches^T @ dy`, a few images at a time (`lax.scan` over
~4 MB of patches, which stay in cache), the stride-2 3x3 convolutions are chunked im2col
matmuls both ways, the 1x1 ones a strided slice and a dot, and the stride-1 3x3 forward and
input gradient stay XLA's. Measured on the 2-core AMD EPYC (2026-12-04, a loaded machine,
best of 3-4 rounds): the whole ResNet-18's jitted forward+backward 1.4-1.9x faster at width
0.25 and 1.55x at width 1.0. Gradients equal XLA's to 6e-7 relative per convolution
(`tests/test_fast_layers.py`); against float64 both are 4e-3 (worst leaf, relative L2, the
training-mode BatchNorm amplifies rounding).

The third row compiles the same function with `distribute.XLA_CPU_OPTIONS`, as `SSLModel.fit`
compiles its step on a JAX CPU: YNNPACK keeps dots and reductions, and XLA's own kernels run
the convolutions and elementwise fusions. Pure JAX, width 1.0: 10.5-11.0 s against 15.8-16.5
s with XLA's defaults (about 1.5x); width 0.25: within noise (1.3-1.6 s either way). Which
fusion types to keep was measured here (2026-12-04): none at all (`""`) is as fast but sums in
XLA's own reductions (a 512x32x32 channel mean: 2e-6 relative error against 9e-8 with
YNNPACK); keeping elementwise fusions loses the gain (15.8 s); keeping convolutions is slower
at width 0.25 (1.9 s).

The library computes its backbones' convolutions this way on JAX on one CPU device
(`keras_ssl.layers.Conv2D`, `distribute.fast_conv`); this script measures that function alone
in a pure-JAX ResNet-18. What did not help (per-layer and end to end, same script):
unchunked im2col (0.42x end to end: ~300 MB of patches per layer), `conv_general_dilated_patches`
(2-4x slower than slices), 3x3 as nine shifted 1x1 matmuls (0.71-1.0x), everything as matmuls
(0.79x), the stride-1 3x3 forward and input gradient as chunked im2col where C >= 64
(1.3-1.9x faster per convolution timed alone, equal in a conv-BN-ReLU block's forward+backward,
0.89x end to end at width 0.25 and 1.03x at 1.0), NCHW/OIHW dimension numbers (1.2-1.8x
slower: XLA adds transposes), wrapping XLA's own
convolution in `custom_vjp` (0.89x), and the XLA flags `xla_cpu_enable_fast_math`,
`xla_cpu_multi_thread_eigen=false`, `xla_cpu_prefer_vector_width=512`, `xla_cpu_use_onednn`,
`xla_cpu_experimental_onednn_custom_call` and `xla_cpu_experimental_xnn_graph_fusion_mode=GREEDY`
(each within 2 %).
"""

import argparse
import functools
import os
import time

os.environ["KERAS_BACKEND"] = "jax"

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax import lax

from keras_ssl import distribute


# ------------------------------------------------------------ a CIFAR ResNet-18 in pure JAX
def xla_conv(x, kernel, strides, padding):
    return keras.ops.conv(x, kernel, strides=strides, padding=padding)


def conv2d(x, kernel, strides, padding):
    return distribute.fast_conv(x, kernel, (strides, strides), padding, "channels_last", (1, 1))


def init(width, key):
    base = max(16, int(round(64 * width)))
    keys = iter(jax.random.split(key, 64))
    params = {}

    def conv(name, k, cin, cout):
        params[name] = {
            "w": jax.random.normal(next(keys), (k, k, cin, cout)) * np.sqrt(2 / (k * k * cin)),
            "g": 1 + 0.1 * jax.random.normal(next(keys), (cout,)),
            "b": 0.1 * jax.random.normal(next(keys), (cout,)),
        }

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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=512, help="views per step (SimCLR: 2 x 256 images)")
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    params = init(args.width, jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (args.batch_size, 32, 32, 3))
    dim = params["s3b1_2"]["w"].shape[-1]
    projection = jax.random.normal(jax.random.PRNGKey(2), (dim, 128)) / np.sqrt(dim)
    steps = {
        name: jax.jit(jax.value_and_grad(functools.partial(loss, conv=conv)))
        for name, conv in (("xla", xla_conv), ("chunked matmul", conv2d))
    }
    # the library's whole choice: these convolutions, compiled as `SSLModel.fit` compiles
    steps["+ XLA_CPU_OPTIONS"] = jax.jit(
        jax.value_and_grad(functools.partial(loss, conv=conv2d)), compiler_options=distribute.XLA_CPU_OPTIONS
    )
    results = {name: jax.block_until_ready(step(params, x, projection)) for name, step in steps.items()}
    best = {name: float("inf") for name in steps}
    for _ in range(args.rounds):  # alternating, best of rounds: other load only slows a run
        for name, step in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(step(params, x, projection))
            best[name] = min(best[name], time.perf_counter() - start)
    ref = jax.tree.leaves(results["xla"][1])
    error = {
        name: max(
            float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) for a, b in zip(jax.tree.leaves(results[name][1]), ref)
        )
        for name in list(steps)[1:]
    }
    print(f"ResNet-18 width {args.width}, {args.batch_size} views, jitted forward+backward, best of {args.rounds}")
    for name in steps:
        print(f"{name:20s} {best[name] * 1e3:8.0f} ms  {best['xla'] / best[name]:.2f}x")
    print("gradients against xla's, worst leaf relative L2: " + ", ".join(f"{k} {v:.1e}" for k, v in error.items()))


if __name__ == "__main__":
    main()
