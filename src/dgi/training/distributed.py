"""Training on several processes with PyTorch's own engine: `torchrun` starts them and sets the
environment, DistributedDataParallel averages the gradients, and this module holds the rest.

Each global batch (`train.batch_size` rows) is split across the processes, so N processes train on the
same batches as one process does. In-batch negatives are gathered from every process with an
all_gather that keeps the gradient (`gather`), so the contrastive loss sees the whole global batch
and its gradient equals the single-process one. Process 0 alone validates, logs and writes
checkpoints; the others receive its decisions (`broadcast`) and its weights (`sync_parameters`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as distributed_functional
from torch import Tensor, nn


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls, device: torch.device) -> ProcessGroup:
        """The group torchrun describes in WORLD_SIZE / RANK / LOCAL_RANK (one process when unset);
        initialises torch.distributed (NCCL on CUDA, gloo on the CPU) on first use."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, rows: Tensor, contiguous: bool = False) -> Tensor:
        """This process's share of a global batch: every world-th row, starting at its rank, or with
        `contiguous` its rank-th consecutive block (rows that belong together stay together)."""
        if not self.distributed:
            return rows
        return rows.tensor_split(self.world)[self.rank] if contiguous else rows[self.rank::self.world]

    def gather(self, tensor: Tensor) -> tuple[Tensor, int]:
        """Every process's `tensor` concatenated in rank order along dim 0, and where this process's
        rows start in it. The gradient flows back to each process's own rows (all_gather's backward
        is a reduce-scatter). Shards may differ in length (the last batch of an epoch)."""
        if not self.distributed:
            return tensor, 0
        sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([len(tensor)], device=tensor.device))
        lengths = [int(size.item()) for size in sizes]
        longest = max(lengths)
        padded = torch.cat([tensor, tensor.new_zeros(longest - len(tensor), *tensor.shape[1:])]) \
            if len(tensor) < longest else tensor
        parts = distributed_functional.all_gather(padded) if tensor.requires_grad else _all_gather(padded, self.world)
        return torch.cat([part[:length] for part, length in zip(parts, lengths)]), sum(lengths[: self.rank])

    def mean_of(self, values: list[float]) -> list[float]:
        """The means over processes of per-process numbers (the step's losses, to log), in one all-reduce."""
        if not self.distributed:
            return values
        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total)
        return (total / self.world).tolist()

    def broadcast(self, value: Any) -> Any:
        """Process 0's `value` (any picklable object) on every process."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sync_parameters(self, module: nn.Module) -> None:
        """Process 0's parameters and buffers everywhere (after a k-means index or a reloaded checkpoint)."""
        if not self.distributed:
            return
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _all_gather(tensor: Tensor, world: int) -> list[Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous())
    return parts
