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

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator, List, Sequence

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from ..errors import ConfigError
from ..stop import PeerError


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


def init_distributed(device: str = "auto", timeout_s: float = 300.0,
                     flag: str = "--ddp") -> DistContext:
    """Join the torchrun job (env:// rendezvous); NCCL with CUDA, gloo otherwise.

    Every collective waits at most ``timeout_s`` for the other ranks: a stalled or dead
    peer then ends this rank with ``PeerError`` (gloo) or the NCCL watchdog's abort,
    never a hang; torchrun then stops the remaining ranks.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigError(f"{flag} needs torchrun, e.g. `torchrun --nproc-per-node 2 -m "
                          f"locallearn train ... {flag}` (RANK/WORLD_SIZE are not set)")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    if use_cuda:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        with collective(f"joining the job ({os.environ.get('WORLD_SIZE')} ranks)", timeout_s):
            dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                    timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev)


@contextlib.contextmanager
def collective(what: str, timeout_s: float = 0.0) -> Iterator[None]:
    """Turn a failed collective (a peer died, or none answered in time) into PeerError,
    one line naming this rank, what it was doing and the cause."""
    try:
        yield
    except RuntimeError as e:  # gloo raises RuntimeError / DistBackendError subclasses
        rank = os.environ.get("RANK", "?")
        text = str(e).lower()
        if "timed out" in text or "timeout" in text:
            cause = (f"no answer within {timeout_s:g} s (--dist-timeout): a peer rank stalled"
                     if timeout_s else "a peer rank stalled (timeout)")
        elif any(w in text for w in ("closed", "reset", "broken pipe", "connection", "peer")):
            cause = "a peer rank exited (see its message)"
        else:
            cause = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise PeerError(f"rank {rank}: {what} failed: {cause}") from None


def any_rank(flags: Sequence[float], device: torch.device, timeout_s: float,
             what: str) -> List[float]:
    """Element-wise maximum of ``flags`` over all ranks (every rank must call it at the
    same point: it is how the ranks agree to stop, fail or go on together)."""
    t = torch.tensor([float(f) for f in flags], dtype=torch.float64, device=device)
    with collective(what, timeout_s):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


@torch.no_grad()
def allreduce_grads(params: List[torch.nn.Parameter], world_size: int,
                    timeout_s: float = 0.0) -> None:
    """Average the gradients of ``params`` over all ranks with one all_reduce."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or world_size == 1:
        return
    flat = _flatten_dense_tensors(grads)
    with collective("averaging the gradients", timeout_s):
        dist.all_reduce(flat)
    flat.div_(world_size)
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)
