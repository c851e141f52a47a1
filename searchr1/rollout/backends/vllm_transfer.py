"""Weights across processes into vLLM servers: the worker extension the servers load, and the trainer's NCCL sender.

A vLLM server started with ``--worker-extension-cls searchr1.rollout.backends.vllm_transfer.RemoteWeightsExtension``
(and ``VLLM_SERVER_DEV_MODE=1`` for ``/collective_rpc``) gets its weights from the trainer in one of two ways:

* **file** (CPU, or any host that shares ``/dev/shm`` with the trainer): the trainer writes a safetensors snapshot,
  ``POST /collective_rpc {"method": "searchr1_reload_weights_from_file", "args": [path]}`` loads it in place on
  every worker (:class:`~searchr1.rollout.backends.vllm_weights.VLLMWorkerExtension`);
* **group** (``nccl`` on GPU, ``gloo`` on CPU): a stateless process group between the trainer's rank 0 (group rank
  0, the store's host) and every vLLM worker of every server (group ranks ``1 + offset + worker rank``), built from
  plain torch (``TCPStore`` + ``ProcessGroupNCCL``/``ProcessGroupGloo``, no ``init_process_group``: neither side's
  default group is touched). ``searchr1_group_init`` joins it once; each push is ``searchr1_group_receive(manifest)``
  on every server (in flight while the trainer broadcasts) with the ``(name, dtype, shape)`` list as JSON: each
  worker receives the tensors one by one from rank 0 onto its device and streams them into ``reload_weights``, so
  the model is never held twice. The scheme of TRL's ``vllm-serve`` and verl's NCCL weight sync; the gloo variant
  runs the same code on CPU (that is how it is tested without a GPU).

This module imports torch only (the vLLM workers import it; nothing of ``searchr1.training``), and never vllm.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import timedelta

import torch

from searchr1.rollout.backends.vllm_weights import VLLMWorkerExtension

EXTENSION = "searchr1.rollout.backends.vllm_transfer.RemoteWeightsExtension"
"""The ``--worker-extension-cls`` value of a rollout server."""

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def manifest(named: list[tuple[str, torch.Tensor]]) -> str:
    """The JSON ``[[name, dtype, shape], ...]`` of the tensors a push sends, in order."""
    return json.dumps([[n, str(t.dtype).removeprefix("torch."), list(t.shape)] for n, t in named])


def parse_manifest(text: str) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """The inverse of :func:`manifest`."""
    out = []
    for name, dtype, shape in json.loads(text):
        if dtype not in _DTYPES:
            raise ValueError(f"weight {name!r} has dtype {dtype}; the transfer supports {sorted(_DTYPES)}")
        out.append((name, _DTYPES[dtype], tuple(shape)))
    return out


def stateless_group(backend: str, host: str, port: int, rank: int, world_size: int, device: torch.device,
                    timeout: float):  # fmt: skip
    """A process group of its own (never the default group) over a ``TCPStore`` at ``host:port``: ``"nccl"`` for
    CUDA tensors, ``"gloo"`` for CPU ones. Rank 0 hosts the store. A first broadcast makes every member wait for the
    others (NCCL creates its communicator there), so the trainer's join returns once every vLLM worker has joined.

    Returns:
        ``(store, group)``: keep the store alive as long as the group.
    """
    import torch.distributed as dist

    wait = timedelta(seconds=timeout)
    store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=wait)
    prefixed = dist.PrefixStore("searchr1-weights", store)
    if backend == "nccl":
        group = dist.ProcessGroupNCCL(prefixed, rank, world_size)
    elif backend == "gloo":
        group = dist.ProcessGroupGloo(prefixed, rank, world_size, wait)
    else:
        raise ValueError(f"weight group backend must be 'nccl' (GPU) or 'gloo' (CPU), got {backend!r}")
    group.broadcast(torch.zeros(1, device=device), 0).wait()
    return store, group


class RemoteWeightsExtension(VLLMWorkerExtension):
    """Worker extension of a vLLM rollout server: file loads (inherited) and the process-group receiver.

    vLLM mixes it into each worker (``self.device``, ``self.rank``, ``self.reload_weights`` are the worker's);
    methods are called by name through ``/collective_rpc``, whose arguments are strings.
    """

    def searchr1_group_init(self, backend: str, host: str, port: str, world_size: str, offset: str,
                            timeout: str = "600") -> str:  # fmt: skip
        """Join the trainer's weight group as rank ``1 + offset + self.rank`` (replacing a group an earlier trainer
        made); returns that rank."""
        rank = 1 + int(offset) + int(getattr(self, "rank", 0))
        device = self.device if backend == "nccl" else torch.device("cpu")
        if backend == "nccl":
            torch.cuda.set_device(device)
        self._searchr1_group = (device, *stateless_group(backend, host, int(port), rank, int(world_size), device,
                                                         float(timeout)))  # fmt: skip
        return str(rank)

    def searchr1_group_receive(self, manifest_json: str) -> bool:
        """Receive the tensors of ``manifest_json`` from rank 0, one at a time, streaming them into the model."""
        joined = getattr(self, "_searchr1_group", None)
        if joined is None:
            raise RuntimeError("searchr1_group_receive before searchr1_group_init: the trainer joins the group first")
        device, _, group = joined
        items, done = parse_manifest(manifest_json), [0]

        def receive(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
            buffer = torch.empty(shape, dtype=dtype, device=device)
            group.broadcast(buffer, 0).wait()
            done[0] += 1
            return buffer

        def received() -> Iterator[tuple[str, torch.Tensor]]:
            for name, dtype, shape in items:
                yield name, receive(dtype, shape)

        try:
            return self.searchr1_reload_weights(received())
        finally:  # a load that stopped early still takes every broadcast: the trainer never waits for ever
            for _, dtype, shape in items[done[0] :]:
                receive(dtype, shape)


class GroupWeightSender:
    """The trainer's end of the weight group (group rank 0; only the trainer's rank 0 process).

    Args:
        backend: ``"nccl"`` (the trainer's CUDA device to the servers' GPUs) or ``"gloo"`` (CPU).
        host: an address of this machine the vLLM workers can reach (the store listens there).
        port: a free TCP port for the store.
        workers: vLLM workers over all servers (servers x tensor-parallel size).
        device: the device tensors are sent from (the trainer's CUDA device for NCCL, CPU for gloo).
        timeout: seconds to wait for every worker to join.
    """

    def __init__(self, backend: str, host: str, port: int, workers: int, device: torch.device,
                 timeout: float = 600.0) -> None:  # fmt: skip
        self.backend, self.host, self.port, self.world_size = backend, host, port, workers + 1
        self.device, self.timeout = device, timeout
        self._joined = None

    def join(self) -> None:
        """Host the store and wait for every worker (while the servers run ``searchr1_group_init``)."""
        self._joined = stateless_group(self.backend, self.host, self.port, 0, self.world_size, self.device,
                                       self.timeout)  # fmt: skip

    def send(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Broadcast each tensor (in the manifest's order) to every worker, one at a time."""
        if self._joined is None:
            raise RuntimeError("GroupWeightSender.send before join()")
        _, group = self._joined
        for _, tensor in named:
            group.broadcast(tensor.detach().to(self.device).contiguous(), 0).wait()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
