"""PyTorch across processes: `torch.distributed` (gloo on CPU, NCCL on GPU) under Keras's own train step.

One process per device (as `torchrun` starts them), each on its own shard of the global batch:
`replication.gather` all-gathers the declared outputs (backward: the sum over processes of the
local rows' gradient), every process computes the global loss, and the optimizer averages the
gradients over the processes (`sync_gradients`). BatchNorm: per process, or `layers.synchronize_batch_norm`.
"""

import datetime
import os
import threading
import time
import types

import keras
import numpy as np

from keras_ssl.backend import processes
from keras_ssl.backend.probes import backend

_HEARTBEAT_S = 0.5
_PREFIX = "keras_ssl/heartbeat/"
_state = {}
_LOCK = threading.Lock()  # the heartbeat store's client serves two threads


class LostProcessError(RuntimeError):
    """A collective failed because another process was lost (killed, crashed) or fell out of step.

    Example:
        >>> issubclass(keras_ssl.backend.torch_processes.LostProcessError, RuntimeError)
        True
    """


def initialize(rank=None, world_size=None, master_addr=None, master_port=None, local_rank=None, timeout=300):
    """Joins the `torch.distributed` process group: gloo on CPU, NCCL on GPUs (one per process).

    Every argument left None is read from the variables `torchrun` sets:
    `RANK`, `WORLD_SIZE`, `MASTER_ADDR` (default 127.0.0.1), `MASTER_PORT`
    (default 29500), `LOCAL_RANK` (default: `RANK`). Call it on every process
    before creating the model. Calling it again with the same rank and world
    size does nothing.

    Args:
        rank: this process's index, in `[0, world_size)`.
        world_size: number of processes.
        master_addr: host of process 0 (it hosts the rendezvous store).
        master_port: free TCP port on that host.
        local_rank: the GPU this process uses on its host.
        timeout: seconds a collective waits for the others before failing.

    Returns:
        `(rank, world_size)`.

    Example:
        >>> from keras_ssl.backend import torch_processes
        >>> torch_processes.initialize(rank=0, world_size=2, master_addr="10.0.0.1")  # doctest: +SKIP
        >>> torch_processes.initialize(rank=0, world_size=0)
        Traceback (most recent call last):
        ...
        ValueError: torch_processes.initialize needs 0 <= rank < world_size, got rank=0, world_size=0.
    """
    env = os.environ
    rank, world_size = _as_int("rank", rank, "RANK"), _as_int("world_size", world_size, "WORLD_SIZE")
    if not 0 <= rank < world_size:
        raise ValueError(
            f"torch_processes.initialize needs 0 <= rank < world_size, got rank={rank}, world_size={world_size}."
        )
    if backend() != "torch":
        raise NotImplementedError(f"torch_processes needs the torch backend, got {backend()}.")
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
            raise RuntimeError(
                f"a process group (rank {dist.get_rank()} of {dist.get_world_size()}) already exists; "
                f"cannot join as rank {rank} of {world_size}."
            )
        return rank, world_size
    address = master_addr or env.get("MASTER_ADDR", "127.0.0.1")
    port = _as_int("master_port", master_port, "MASTER_PORT", 29500)
    local_rank = _as_int("local_rank", local_rank, "LOCAL_RANK", rank)
    kind = "nccl" if torch.cuda.is_available() else "gloo"
    if kind == "nccl":
        torch.cuda.set_device(local_rank)  # Keras's "cuda" device is then this process's GPU
    wait = datetime.timedelta(seconds=float(timeout))
    dist.init_process_group(kind, init_method=f"tcp://{address}:{port}", rank=rank, world_size=world_size, timeout=wait)
    # Heartbeats on their own connection, so a blocked collective does not stop them.
    store = dist.TCPStore(address, port, is_master=False, timeout=datetime.timedelta(seconds=10))
    _state.update(rank=rank, world=world_size, address=f"{address}:{port}", store=store)
    _state["prefix"] = _PREFIX + env.get("TORCHELASTIC_RESTART_COUNT", "0") + "/"
    threading.Thread(target=_beat, args=(store, _state["prefix"] + str(rank)), daemon=True).start()
    return rank, world_size


def _as_int(name, value, variable, default=None):
    if value is None:
        value = os.environ.get(variable, default)
    if value is None:
        raise ValueError(f"torch_processes.initialize: pass `{name}` or set the environment variable {variable}.")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` ({variable}) must be an integer, got {value!r}.") from None


def _beat(store, key):
    while True:
        try:
            with _LOCK:
                store.add(key, 1)
        except Exception:  # the store's host is gone: the collective that fails next says so
            return
        time.sleep(_HEARTBEAT_S)


def active():
    """Whether this process is one of several in a `torch.distributed` group.

    Example:
        >>> keras_ssl.backend.torch_processes.active()   # one process
        False
    """
    if backend() != "torch":
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank():
    """This process's rank: 0 without a process group.

    Example:
        >>> keras_ssl.backend.torch_processes.rank()
        0
    """
    return _group_value("get_rank", 0)


def world_size():
    """Number of processes: 1 without a process group.

    Example:
        >>> keras_ssl.backend.torch_processes.world_size()
        1
    """
    return _group_value("get_world_size", 1)


def _group_value(name, default):
    if not active():
        return default
    import torch.distributed as dist

    return getattr(dist, name)()


def _lost_processes(wait=3.0):
    # Ranks whose heartbeat stopped for `wait` s; process 0 hosts the store, so no store means it is lost.
    store, prefix = _state["store"], _state["prefix"]
    others = [r for r in range(_state["world"]) if r != _state["rank"]]
    try:
        with _LOCK:
            before = [store.add(prefix + str(r), 0) for r in others]
        time.sleep(wait)
        with _LOCK:
            after = [store.add(prefix + str(r), 0) for r in others]
    except Exception:
        return [0]
    return [r for r, b, a in zip(others, before, after) if a == b]


def _collective(what, fn, *args):
    # `fn(*args)`, a torch.distributed call; its failure becomes a LostProcessError naming the lost ranks.
    try:
        return fn(*args)
    except RuntimeError as error:
        if not _state or isinstance(error, LostProcessError):
            raise
        lost = _lost_processes()
        me = f"process {_state['rank']} of {_state['world']}"
        if lost:
            names = ", ".join(map(str, lost))
            cause = f"process {names} was lost (killed or crashed: see its log; process 0 hosts {_state['address']})"
        else:
            cause = "every process is alive, but one did not reach this collective in time (out of step or hung)"
        raise LostProcessError(
            f"torch.distributed {what} failed on {me}: {cause}. Restart every process to resume from the last "
            f"checkpoint. ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error


def barrier():
    """Waits until every process gets here (nothing to wait for without a process group).

    Example:
        >>> keras_ssl.backend.torch_processes.barrier()
    """
    if active():
        import torch.distributed as dist

        _collective("barrier", dist.barrier)


def start_equal(variables, seed_generators=()):
    """Copies process 0's `variables` to every process; each process then draws its own random numbers.

    The seed generators get process 0's state plus a rank offset, so
    augmentations differ between the processes' shards (as between rows of
    one batch) yet the run is set by process 0's seed.

    Args:
        variables: Keras variables (a model's `weights`).
        seed_generators: `keras.random.SeedGenerator`s to fold the rank into.

    Example:
        >>> keras_ssl.backend.torch_processes.start_equal(encoder.weights)   # one process: nothing to do
    """
    if not active():
        return
    import torch
    import torch.distributed as dist

    variables = list(variables)
    for v in variables:
        value = v.value.detach().clone().contiguous()
        _collective("broadcast of the initial weights", dist.broadcast, value, 0)
        v.assign(value)
    generators = list(seed_generators)
    if generators:
        states = np.stack([keras.ops.convert_to_numpy(g.state) for g in generators]).astype("int64")
        # NCCL moves only GPU tensors: the device the variables live on.
        states = torch.tensor(states, device=variables[0].value.device if variables else "cpu")
        _collective("broadcast of the seeds", dist.broadcast, states, 0)
        states = states.cpu().numpy()
        states[:, 0] = (states[:, 0] + rank() * 0x9E3779B9) & 0xFFFFFFFF
        for g, state in zip(generators, states):
            if g.state.dtype == "int32":  # the uint32 bits as Keras stores them
                state = (state ^ 0x80000000) - 0x80000000
            g.state.assign(state.astype(g.state.dtype))


def _flat(tensors):
    import torch

    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(flat, likes):
    sizes = [t.numel() for t in likes]
    return [piece.view_as(t) for piece, t in zip(flat.split(sizes), likes)]


def _gather_flat(tensors):
    """All-gathers same-dtype tensors in one collective: each tensor's rows of every rank, in rank order."""
    import torch
    import torch.distributed as dist

    flat = _flat(tensors).contiguous()
    parts = [torch.empty_like(flat) for _ in range(world_size())]
    _collective("all-gather of the outputs", dist.all_gather, parts, flat)
    per_rank = [_unflat(p, tensors) for p in parts]
    return [torch.cat([ranks[i] for ranks in per_rank], 0) for i in range(len(tensors))]


def _gather_function():
    import torch
    import torch.distributed as dist

    class AllGather(torch.autograd.Function):
        """Forward: concatenation over ranks. Backward: sum over ranks of the gradient, local rows kept."""

        @staticmethod
        def forward(ctx, *tensors):
            ctx.shapes = [t.shape for t in tensors]
            outputs = tuple(_gather_flat(tensors))
            # Gathered without gradient stays so (BYOL's targets, MoCo's keys): no gradient flows to it.
            ctx.mark_non_differentiable(*[o for o, t in zip(outputs, tensors) if not t.requires_grad])
            return outputs

        @staticmethod
        def backward(ctx, *grads):
            n, me = world_size(), rank()
            # The gradient laid out as the gathered buffer, rank by rank, summed over the
            # processes; this rank keeps its own block: the rows it contributed.
            blocks = [[g.reshape(n, -1, *s[1:])[r] for g, s in zip(grads, ctx.shapes)] for r in range(n)]
            flat = torch.cat([_flat(b) for b in blocks]).contiguous()
            _collective("all-reduce of the gathered outputs' gradient", dist.all_reduce, flat)
            return tuple(_unflat(flat.view(n, -1)[me], blocks[me]))

    return AllGather


_AllGather = []


def all_gather(structure):
    """Concatenates every tensor of `structure` over the processes along axis 0, in rank order.

    Float tensors keep a gradient whose backward sums the processes' upstream
    gradients and keeps the local rows; other dtypes are gathered without
    one. One collective per dtype. Batches must have the same shape on every
    process. Used by `replication.gather`; the identity without a process group.

    Example:
        >>> x = ops.ones((4, 2))
        >>> keras_ssl.backend.torch_processes.all_gather({"z": x})["z"] is x   # one process
        True
    """
    if not active():
        return structure
    import torch

    leaves = [torch.as_tensor(keras.ops.convert_to_tensor(t)) for t in keras.tree.flatten(structure)]
    gathered = [None] * len(leaves)
    for dtype in dict.fromkeys(t.dtype for t in leaves):
        index = [i for i, t in enumerate(leaves) if t.dtype == dtype]
        group = [leaves[i] for i in index]
        if dtype.is_floating_point and torch.is_grad_enabled() and any(t.requires_grad for t in group):
            if not _AllGather:
                _AllGather.append(_gather_function())
            outputs = _AllGather[0].apply(*group)
        elif dtype == torch.bool:
            outputs = [t.bool() for t in _gather_flat([t.to(torch.uint8) for t in group])]
        else:
            outputs = _gather_flat([t.detach() for t in group])
        for i, out in zip(index, outputs):
            gathered[i] = out
    return keras.tree.pack_sequence_as(structure, gathered)


def average_gradients(gradients):
    """Averages `gradients` (torch tensors, None kept) over the processes in place: one all-reduce per dtype.

    Example:
        >>> g = [ops.ones((2,)), None]
        >>> keras_ssl.backend.torch_processes.average_gradients(g)[0] is g[0]   # one process: unchanged
        True
    """
    if not active():
        return gradients
    import torch.distributed as dist

    present = [g for g in gradients if g is not None]
    n = world_size()
    for dtype in dict.fromkeys(g.dtype for g in present):
        group = [g for g in present if g.dtype == dtype]
        flat = _flat(group)
        _collective("all-reduce of the gradients", dist.all_reduce, flat)
        flat /= n
        for g, mean in zip(group, _unflat(flat, group)):
            g.copy_(mean)
    return gradients


def sync_gradients(optimizer):
    """Makes `optimizer.apply` average the gradients over the processes first (torch only; idempotent).

    Keras's torch train step calls `optimizer.apply` with each process's
    gradients: averaging there keeps Keras's step (no DDP wrapper). The
    process group is looked up at each step, so `compile` may come first.

    Example:
        >>> optimizer = keras_ssl.backend.torch_processes.sync_gradients(keras.optimizers.SGD())
        >>> type(optimizer).__name__
        'SGD'
    """
    if backend() != "torch" or getattr(optimizer.apply, "__func__", None) is _averaged_apply:
        return optimizer
    # A method bound to the optimizer (not a closure), so a copied optimizer applies to itself.
    optimizer.apply = types.MethodType(_averaged_apply, optimizer)
    return optimizer


def _averaged_apply(self, grads, trainable_variables=None):
    return type(self).apply(self, average_gradients(list(grads)), trainable_variables)


def shutdown():
    """Leaves the process group (call at the end of a run on every process).

    Example:
        >>> keras_ssl.backend.torch_processes.shutdown()   # no group: nothing to do
    """
    if backend() == "torch":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        _state.clear()


def _setup(cluster, timeout, heartbeat_timeout):  # `distribute.initialize()` on PyTorch
    initialize(cluster.process_id, cluster.num_processes, *cluster.addresses[0].rsplit(":", 1), timeout=timeout)


processes.register_backend("torch", _setup)
