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
- PyTorch: one device per process.

Many processes (one per device, on one or many hosts):

- Every backend: `initialize()` first, on every process (it reads the launcher's variables:
  `KERAS_SSL_COORDINATOR` / `_NUM_PROCESSES` / `_PROCESS_ID`, Keras's, JAX's, torchrun's or
  `TF_CONFIG`); `process_index()`, `process_count()`, `is_chief()` (only process 0 writes).
- JAX: then `data_parallel()` spans every process's devices; each process feeds its own rows
  (`process_shard(x, global_batch_size)`), and the step sees the global batch.
- TensorFlow: `multi_worker_strategy()` (`MultiWorkerMirroredStrategy`), then build, compile and
  `fit` in its scope on the global array: TensorFlow shards it by worker.
- PyTorch: `torch_processes.initialize()` on every process (it reads
  torchrun's `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`,
  `LOCAL_RANK`), then build, compile and `fit` as on one process, each
  process on its own equal shard (`x[rank : len(x) // n * n : n]`, `n` the
  world size: every process must take as many steps). `fit` first copies
  process 0's weights to every process
  (`torch_processes.start_equal`); `gather` all-gathers the declared
  outputs (backward: the sum over processes of the local rows' gradient),
  so each process computes the global loss, and the optimizer averages the
  processes' gradients before it applies them (`torch_processes.sync_gradients`).
  BatchNorm statistics stay per process unless
  `layers.synchronize_batch_norm(model)`. A lost process makes the others
  fail with `torch_processes.LostProcessError`, naming it.
"""

from keras_ssl.backend import (  # noqa: F401  (the public names)
    Cluster,
    Training,
    accelerator,
    alone,
    backend,
    batch_norm_sync,
    build_forward,
    cluster,
    conv_layout,
    cpu_jit,
    data_parallel,
    fast_conv,
    fused_batch_norm,
    gather,
    initialize,
    input_shard,
    is_chief,
    mirrored_strategy,
    multi_worker_strategy,
    needs_array_input,
    num_replicas,
    process_count,
    process_index,
    process_shard,
    process_training,
    resolve_jit_compile,
    skipped_train_step,
    summed_replicas,
    torch_processes,
)
