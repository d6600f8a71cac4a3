"""Distributed runs through ``torchrun`` and ``torch.distributed`` (gloo on CPU, NCCL on CUDA).

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`setup` reads them, joins the process group and picks this process's device. A plain
``mmcore train`` (no ``WORLD_SIZE``, or 1) is a world of one and touches no process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mmcore.errors import ConfigError, ConfigIssue


@dataclass
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``, and whether we own the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def close(self, *, wait: bool = False) -> None:
        """Leave the process group; ``wait`` (after a run every process finished) first waits for all
        of them, so none tears the group down while a peer still talks to it (which can abort the
        peer at exit). Never waits after an error: the others may be stuck elsewhere."""
        if self.owns_group and dist.is_initialized():
            try:
                if wait:
                    dist.barrier()
            finally:
                dist.destroy_process_group()
            self.owns_group = False


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` -> this process's device (``cuda:LOCAL_RANK`` under torchrun)."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError([ConfigIssue("trainer.device", "is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")])
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    index = local_rank % max(1, torch.cuda.device_count())
    return torch.device("cuda", index)


def setup(device_choice: str = "auto") -> DistContext:
    """Join the process group ``torchrun`` describes (if any) and choose the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    if world_size <= 1:
        return DistContext(device=device)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    owns = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       device=device, owns_group=owns)
