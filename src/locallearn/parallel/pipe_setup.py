"""Starting a pipeline job: ranks agree on a setup error (one message, exit 2 on every
rank) and receive from rank 0 what they need to build the network without the data."""
from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist

from ..errors import ConfigError
from .ddp import DistContext, collective


def broadcast_json(obj: Optional[Dict[str, Any]], src: int, ctx: DistContext,
                   timeout_s: float, what: str) -> Dict[str, Any]:
    """``obj`` (given on ``src``) on every rank, as JSON bytes: no pickle."""
    raw = json.dumps(obj).encode() if ctx.rank == src else b""
    size = torch.tensor([len(raw)], dtype=torch.int64, device=ctx.device)
    with collective(what, timeout_s):
        dist.broadcast(size, src)
        buf = torch.empty(int(size), dtype=torch.uint8, device=ctx.device)
        if ctx.rank == src:
            buf.copy_(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        dist.broadcast(buf, src)
    return json.loads(bytes(buf.cpu().numpy()).decode())


def agree_on_errors(error: Optional[BaseException], ctx: DistContext, timeout_s: float) -> None:
    """Every rank calls this after a setup phase: if any rank met a ConfigError, every
    rank raises the first failing rank's message (the CLI prints it on rank 0 only and
    every rank exits 2), instead of the others waiting for it until a timeout."""
    first = torch.tensor([ctx.rank if error is not None else ctx.world_size],
                         dtype=torch.int64, device=ctx.device)
    with collective("checking the arguments on every rank", timeout_s):
        dist.all_reduce(first, op=dist.ReduceOp.MIN)
    src = int(first)
    if src == ctx.world_size:
        return
    text = broadcast_json({"error": str(error)} if ctx.rank == src else None, src, ctx,
                          timeout_s, "sharing the error")["error"]
    close_group(timeout_s)  # no rank leaves while another still talks to it
    raise ConfigError(text if src == 0 else f"(rank {src}) {text}")


def close_group(timeout_s: float) -> None:
    """Meet the other ranks once more, then take the process group down cleanly (a rank
    exiting while a peer's gloo thread still uses the connection can abort that peer)."""
    with collective("closing the job", timeout_s):
        dist.barrier()
    dist.destroy_process_group()


def data_info(data: Any, steps: int, test_steps: int) -> Dict[str, Any]:
    """What the other ranks need to know of rank 0's dataset."""
    return {"num_classes": data.num_classes, "in_chans": data.in_chans,
            "image_size": list(data.image_size), "mean": list(data.mean),
            "std": list(data.std), "task": getattr(data, "task", "classification"),
            "steps": steps, "test_steps": test_steps,
            "rng": torch.get_rng_state().tolist()}


def info_namespace(info: Dict[str, Any]) -> SimpleNamespace:
    """A stand-in for the dataset where ``build_net`` reads it."""
    return SimpleNamespace(num_classes=info["num_classes"], in_chans=info["in_chans"],
                           image_size=tuple(info["image_size"]), mean=tuple(info["mean"]),
                           std=tuple(info["std"]), task=info["task"])
