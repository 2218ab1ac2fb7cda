"""Data-parallel local learning: torchrun + torch.distributed (gloo on CPU, NCCL on GPU).

Why not ``DistributedDataParallel`` itself: DDP's reducer averages a parameter's
gradient when that parameter's autograd hook fires in a *synchronised* backward.
In local learning block j's parameters only receive gradients from loss j, so with
the K-1 local backwards under ``no_sync()`` DDP would never average blocks 1..K-1.
Instead every rank runs the K local backwards, then all gradients are averaged with
one coalesced ``all_reduce`` per step, then every block steps: the same update as
one process on the whole batch (the losses are means over equal shards).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from ..errors import ConfigError


@dataclass
class DistContext:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistContext:
    """Join the torchrun job (env:// rendezvous); NCCL with CUDA, gloo otherwise."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError("--ddp needs torchrun, e.g. `torchrun --nproc-per-node 2 -m locallearn "
                          "train ... --ddp` (RANK/WORLD_SIZE are not set)")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    if use_cuda:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev)


@torch.no_grad()
def allreduce_grads(params: List[torch.nn.Parameter], world_size: int) -> None:
    """Average the gradients of ``params`` over all ranks with one all_reduce."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or world_size == 1:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat.div_(world_size)
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)
