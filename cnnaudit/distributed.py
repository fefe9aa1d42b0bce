"""Sharding an audit over the processes torchrun starts (torch.distributed: gloo on CPU, nccl on GPU).

Every per-sample loop of a check goes through `Shard.map`: the audited samples are cut into batches of
--batch-size in sample-id order, exactly as one process cuts them; batch k is computed by rank
k mod world_size, and the per-batch results are gathered on every rank in batch order. A sample thus
meets the same batch, the same random attack start and the same corruption draw as in one process
(all keyed by sample id), so the rows and summary.json are those of a single-process run.

Results are gathered on every rank, not only on rank 0, because later checks read earlier rows (attacks
skip clean errors, the bias check reads every check's rows): each rank then runs the small summary
phases itself, which costs no wall time (the others would wait for it), and rank 0 alone writes.
Objects are gathered with torch.distributed's pickling collectives; rows are small next to the images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, n_items: int) -> list[int]:
        """The indices of the work items (batches) this rank computes."""
        return list(range(self.rank, n_items, self.world_size))

    def gather(self, mine: list[R], n_items: int) -> list[R]:
        """Every rank's results for its `mine(n_items)`, on every rank, in item order."""
        if self.world_size == 1:
            return mine
        per_rank: list = [None] * self.world_size
        dist.all_gather_object(per_rank, mine)
        return [per_rank[k % self.world_size][k // self.world_size] for k in range(n_items)]

    def map(self, items: Sequence[T], fn: Callable[[T], R]) -> list[R]:
        return self.gather([fn(items[k]) for k in self.mine(len(items))], len(items))

    def agree(self, value, what: str) -> None:
        """Raise AuditError on every rank unless all ranks hold the same `value` (e.g. a data copy on a
        second node that differs from the first: its shard would be audited against other files)."""
        if self.world_size == 1:
            return
        values: list = [None] * self.world_size
        dist.all_gather_object(values, value)
        odd = [r for r, v in enumerate(values) if v != values[0]]
        if odd:
            from .errors import AuditError
            raise AuditError(f"process {odd[0]} of {self.world_size} sees a different {what} than process 0; "
                             "give every node the same files (a shared filesystem or identical copies).")

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (e.g. a checkpoint only rank 0 read)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


SINGLE = Shard()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def device_for_rank(device: torch.device) -> torch.device:
    """One GPU per process on a node: cuda becomes cuda:LOCAL_RANK unless an index was given."""
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def join(device: torch.device) -> tuple[Shard, bool]:
    """This process's shard; initialises the process group from torchrun's environment when needed.
    Returns (shard, whether this call created the group and so must destroy it)."""
    if not launched_by_torchrun():
        return SINGLE, False
    created = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # nccl's object collectives use the current device
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    return Shard(rank=dist.get_rank(), world_size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0"))), created


def leave(created: bool) -> None:
    if created and dist.is_initialized():
        dist.destroy_process_group()
