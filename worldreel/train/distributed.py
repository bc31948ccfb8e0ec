"""torch.distributed plumbing for the trainer: detect torchrun, pick the backend, wrap the model.

A plain ``python`` process is world size 1 and never touches torch.distributed. Under
``torchrun`` the launcher's standard variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) are the interface: we read them here and nowhere else. Backend: NCCL when the
process trains on a GPU, gloo on CPU.

Wrapping: the trainer never hands the task a DDP/FSDP object. It wraps a tiny ``LossModule``
whose ``forward`` calls ``task.loss(model, batch, generator)``, so whatever the task calls
on the bare model (``model.encode`` as well as ``model(...)``) runs inside the wrapper's
forward, which is what DDP needs to prepare its gradient all-reduce and FSDP needs to
gather its shards.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from worldreel.errors import UserError


@dataclass
class Dist:
    rank: int  # global rank of this process
    world_size: int  # number of processes
    local_rank: int  # rank on this machine (picks the GPU)
    device: torch.device  # where this process trains
    backend: str  # "" (single process), "gloo" or "nccl"

    @property
    def main(self) -> bool:
        """Rank 0 logs, prints and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Dist:
    """Read torchrun's variables, choose the device and start the process group if needed."""
    # 1. Which process is this (torchrun sets these; a plain process has none).
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    # 2. Device: one GPU per process on this machine, else the CPU.
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, got {device!r}", param="train.device")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise UserError("device=cuda but torch sees no CUDA GPU", param="train.device")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"local rank {local_rank} has no GPU (this machine has {torch.cuda.device_count()}); "
                "use --nproc_per_node <= the number of GPUs",
                param="nproc_per_node",
            )
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")

    # 3. Process group: NCCL between GPUs, gloo between CPU processes.
    backend = ""
    if world_size > 1:
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, device_id=dev if use_cuda else None)
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, backend=backend)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


class LossModule(nn.Module):
    """``forward(batch, generator) = task.loss(model, batch, generator)``: the wrapped unit."""

    def __init__(self, task: Any, model: nn.Module):
        super().__init__()
        self.model = model
        self.task = task  # plain attribute: not a module, holds no parameters

    def forward(self, batch: Any, generator: torch.Generator):
        return self.task.loss(self.model, batch, generator)


def wrap(task: Any, model: nn.Module, d: Dist, *, parallel: str = "ddp", find_unused: bool = False) -> nn.Module:
    """The module the training loop calls: the LossModule, under DDP or FSDP when distributed.

    FSDP (FSDP2, ``fully_shard``) shards every block of the model's ``nn.ModuleList``s (the
    transformer blocks) as one unit each, then the rest as the root; a model may name its
    units itself with a ``fsdp_units()`` method. Parameters become DTensors in place, so
    ``model`` stays the object the optimiser, EMA and checkpoints see.
    """
    if parallel not in ("ddp", "fsdp"):
        raise UserError(f"parallel must be ddp or fsdp, got {parallel!r}", param="train.parallel")
    unit = LossModule(task, model)
    if not d.enabled:
        return unit
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [d.device.index] if d.device.type == "cuda" else None
        return DDP(unit, device_ids=ids, find_unused_parameters=find_unused)
    from torch.distributed.fsdp import fully_shard

    units = model.fsdp_units() if hasattr(model, "fsdp_units") else [
        block for m in model.modules() if isinstance(m, nn.ModuleList) for block in m
    ]
    for block in units:
        fully_shard(block)
    fully_shard(unit)
    return unit


def all_mean(value: float, d: Dist) -> float:
    """Mean of a number over all ranks (the number itself on one process)."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t.item()) / d.world_size


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank if ``flag`` is true on any rank (so all ranks stop at the same step)."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj`` in rank order (on every rank); ``[obj]`` on one process."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
