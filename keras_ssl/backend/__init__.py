"""The only package that imports TensorFlow, JAX or PyTorch, or branches on the backend's name.

- `probes`: which backend and device (`backend`, `accelerator`, `conv_layout`).
- `compile`: the compile policy (`resolve_jit_compile`, JAX's CPU compiler
  options `cpu_jit`, `build_forward`).
- `replication`: many devices and hosts (`gather`, `num_replicas`,
  `summed_replicas`, `data_parallel`, `mirrored_strategy`);
  users reach it as `keras_ssl.distribute`.
- `torch_processes`: PyTorch across processes with `torch.distributed`
  (`initialize`, `rank`, `world_size`, `barrier`, `start_equal`, the
  all-gather and the gradient averaging behind `gather` and `SSLModel`).
- `processes`: many processes (`initialize`, `cluster`, `process_index`/
  `process_count`/`is_chief`, `process_shard`, `multi_worker_strategy`).
- `kernels/`: the backends' own fast kernels behind Keras's layers
  (`fused_batch_norm`, `fast_conv`).

Every backend package is imported inside the function that needs it: each is
an optional dependency, and `import keras_ssl` works with any one of them.
"""

from keras_ssl.backend import torch_processes
from keras_ssl.backend.compile import (
    XLA_CPU_OPTIONS,
    build_forward,
    cpu_jit,
    needs_array_input,
    resolve_jit_compile,
    skipped_train_step,
)
from keras_ssl.backend.kernels.batch_norm import fused_batch_norm
from keras_ssl.backend.kernels.conv import fast_conv
from keras_ssl.backend.probes import accelerator, backend, conv_layout
from keras_ssl.backend.processes import (
    Cluster,
    Training,
    alone,
    cluster,
    initialize,
    is_chief,
    multi_worker_strategy,
    process_count,
    process_index,
    process_shard,
    process_training,
    register_backend,
)
from keras_ssl.backend.replication import (
    batch_norm_sync,
    data_parallel,
    gather,
    input_shard,
    mirrored_strategy,
    num_replicas,
    summed_replicas,
)
