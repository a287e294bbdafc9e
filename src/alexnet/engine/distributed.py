"""torchrun / DistributedDataParallel plumbing: NCCL on GPUs, gloo on CPU.

Under ``torchrun`` the environment holds RANK, WORLD_SIZE and LOCAL_RANK;
without it everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


CUDA_INDEX_MAX = 1023  # cuda:N: the most N a name may say (the machine's count is checked when the device is chosen)


def device_names() -> tuple[str, ...]:
    """The device spellings this build of PyTorch runs on (``cuda:N`` standing for any GPU index)."""
    names = ["auto", "cpu"]
    if torch.backends.cuda.is_built() or torch.cuda.is_available():
        names += ["cuda", "cuda:N"]
    if torch.backends.mps.is_built():
        names.append("mps")
    return tuple(names)


def is_device_name(name: str) -> bool:
    """Whether ``name`` is one of :func:`device_names` (``cuda:0`` .. ``cuda:1023`` for ``cuda:N``)."""
    names = device_names()
    if name in names and name != "cuda:N":
        return True
    head, colon, index = name.partition(":")
    return (head == "cuda" and colon == ":" and "cuda:N" in names and index.isascii() and index.isdigit()
            and (index == "0" or not index.startswith("0")) and int(index) <= CUDA_INDEX_MAX)


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU; ``"cuda"``: this process's GPU.

    A name not in :func:`device_names` (``meta``, ``cuda:x``), CUDA or MPS
    where there is none, or a GPU index the machine does not have (torchrun
    with more processes than GPUs) is a one-line UserError.
    """
    from ..errors import UserError

    name = "auto" if name is None else str(name)
    if not is_device_name(name):  # meta, mps on a build without it, cuda:x: refused before anything is built on it
        raise UserError(f"unknown device {name[:40]!r}; this build runs on: {', '.join(device_names())}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device {name!r}: {e}") from None
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {name} asked for, but MPS is not available here")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name} asked for, but CUDA is not available here")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise UserError(f"device {name} asked for, but this machine has {count} CUDA device(s); under torchrun "
                            f"give each process its own GPU (--nproc-per-node at most {count}) or train on the CPU "
                            f"(--device cpu)")
    return device


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (identity for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
