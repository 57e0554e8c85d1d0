"""Training on many devices: the public face of `keras_ssl.backend` (its replication and compile helpers).

Single process, many devices:

- JAX: `data_parallel()` sets `keras.distribution.DataParallel`. The jitted
  step sees the global batch (sharded over devices), so contrastive
  negatives, queues and centres are global with no extra code.
- TensorFlow: `mirrored_strategy()`; each replica runs the step on its slice
  of the batch and `SSLModel.compute_loss` gathers the forward outputs with
  `gather` (gradient: sum over replicas, sliced to the local rows), computes
  the global loss and divides it by the number of replicas, because Keras
  sums the replicas' gradients.
- PyTorch: one device only.

Multi-host JAX: call `initialize()` first on every host.
"""

from keras_ssl.backend import (  # noqa: F401  (the public names)
    accelerator,
    backend,
    build_forward,
    conv_layout,
    cpu_jit,
    data_parallel,
    fast_conv,
    fused_batch_norm,
    gather,
    initialize,
    mirrored_strategy,
    needs_array_input,
    num_replicas,
    resolve_jit_compile,
    skipped_train_step,
)
