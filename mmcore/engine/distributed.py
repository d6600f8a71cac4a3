"""Distributed runs through ``torchrun`` and ``torch.distributed`` (gloo on CPU, NCCL on CUDA).

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`setup` reads them, joins the process group and picks this process's device. A plain
``mmcore train`` (no ``WORLD_SIZE``, or 1) is a world of one and touches no process group.

How the data is split over the processes, without padding or repeating a sample
(:class:`GlobalBatchSampler` for training, :func:`shard_indices` for evaluation), and the
per-process seeds of model randomness (:func:`process_seed`); :class:`mmcore.engine.trainer.Trainer`
states what this makes equal to a one-process run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

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


# ---------------------------------------------------------------------- splitting the data over processes
def shard_indices(n: int, rank: int = 0, world_size: int = 1) -> range:
    """The samples ``0..n-1`` process ``rank`` of ``world_size`` evaluates: every ``world_size``-th
    one from ``rank`` on. The shards partition the data set — no sample twice, none padded in
    (unlike ``torch.utils.data.DistributedSampler``), so shard sizes differ by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return range(rank, n, world_size)


def split_share(n_global: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(start, stop)`` of process ``rank``'s contiguous share of ``n_global`` items: the first
    ``n_global % world_size`` processes get one item more than the others (possibly none)."""
    base, extra = divmod(n_global, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class GlobalBatchSampler(Sampler[list[int]]):
    """This process's share of each global batch of one training epoch (a DataLoader ``batch_sampler``).

    The epoch's order is ``torch.randperm(n)`` under a generator seeded with ``seed + epoch`` —
    the same in every process, and the order ``DistributedSampler`` gives one process — cut into
    global batches of ``batch_size`` (the last one shorter when ``batch_size`` does not divide
    ``n``). Each global batch is split contiguously over the processes (:func:`split_share`): no
    sample is repeated or dropped, unlike ``DistributedSampler``'s padding.

    A process whose share of a (short, last) global batch is empty still has to join DDP's
    gradient all-reduce: it gets the global batch's first sample as a placeholder, which the
    trainer runs with loss weight 0 and leaves out of the loss and the metrics. :attr:`shares`
    gives, per batch, ``(n_local, n_global)``: this process's real samples and the global batch's.

    ``start`` skips the epoch's first ``start`` global batches (a run resumed from a mid-epoch
    checkpoint, :mod:`mmcore.engine.midepoch`): iteration and ``len`` begin at batch ``start``, the
    rest of the order unchanged; :attr:`batches` and :attr:`shares` still cover the whole epoch.
    """

    def __init__(self, n: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, epoch: int = 0,
                 shuffle: bool = True, start: int = 0) -> None:
        if n <= 0:
            raise ValueError(f"a training epoch needs at least one sample, got n={n}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        else:
            order = list(range(n))
        self.batches: list[list[int]] = []
        self.shares: list[tuple[int, int]] = []
        for begin in range(0, n, batch_size):
            global_batch = order[begin : begin + batch_size]
            first, stop = split_share(len(global_batch), rank, world_size)
            local = global_batch[first:stop]
            self.shares.append((len(local), len(global_batch)))
            self.batches.append(local or global_batch[:1])
        if not 0 <= start <= len(self.batches):
            raise ValueError(f"start must be in [0, {len(self.batches)}] (the epoch's global batches), got {start}")
        self.start = start

    def __len__(self) -> int:
        return len(self.batches) - self.start

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches[self.start:])

    @property
    def num_samples(self) -> int:
        """This process's real samples over the epoch (placeholders not counted)."""
        return sum(local for local, _ in self.shares)


def process_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of process ``rank``'s random generators (torch, Python, NumPy) for ``epoch`` of a
    distributed run: what its dropout masks and processor augmentations draw from.

    Distinct for every (seed, rank, epoch), so processes do not draw identical masks for their
    different samples, and a run resumed at an epoch boundary draws what it would have drawn.
    A SHA-512 of the key (Python's ``random.Random`` seeding from a string): stable across
    processes and Python runs, unlike ``hash()``.
    """
    return random.Random(f"model/{seed}/{rank}/{epoch}").getrandbits(63)


def check_training_rows(n: int, world_size: int) -> None:
    """Refuse a training split of ``n`` rows (``0 < n < world_size``) before any training: a process
    with no sample in the whole epoch would have no metric state to merge. Raises
    :class:`~mmcore.errors.ConfigError` (at ``data``) naming both counts."""
    if 0 < n < world_size:
        raise ConfigError([ConfigIssue("data", f"the training split has {n} row(s), fewer than the {world_size} processes of "
                                               f"this distributed run; every process needs at least one training sample "
                                               f"(run fewer processes, e.g. torchrun --nproc-per-node {n})")])
