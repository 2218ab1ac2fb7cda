"""Messages between pipeline ranks: a JSON header and the tensors it names, sent with
torch.distributed P2P ops (two sends per message: the sizes, then one byte buffer).

A message carries a small dict (``kind``, ``step``, flags) and a tree of tensors of any
task's making: an activation, the feature bank's entries, and a target that may be a
tensor (class ids, masks) or a list of dicts of tensors (detection boxes and labels).
Nothing is pickled: the header is JSON and the payload raw bytes, so a peer can send
data, never code.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from .ddp import collective

_ALIGN = 8  # bytes: the widest element, so each tensor is a view of the received buffer
_DTYPES = {str(d): d for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16,
                               torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
                               torch.bool)}


def _flatten(tree: Any, tensors: List[torch.Tensor]) -> Any:
    """Replace every tensor in ``tree`` (tensors, lists, tuples, str-keyed dicts, JSON
    scalars) by ``{"t": index}``, appending it to ``tensors``."""
    if isinstance(tree, torch.Tensor):
        tensors.append(tree)
        return {"t": len(tensors) - 1}
    if isinstance(tree, (list, tuple)):
        return {"l": [_flatten(v, tensors) for v in tree]}
    if isinstance(tree, dict):
        return {"d": {str(k): _flatten(v, tensors) for k, v in tree.items()}}
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return {"v": tree}
    raise TypeError(f"cannot send a {type(tree).__name__} between pipeline ranks")


def _unflatten(node: Any, tensors: List[torch.Tensor]) -> Any:
    if "t" in node:
        return tensors[node["t"]]
    if "l" in node:
        return [_unflatten(v, tensors) for v in node["l"]]
    if "d" in node:
        return {k: _unflatten(v, tensors) for k, v in node["d"].items()}
    return node["v"]


def encode(info: Dict[str, Any], tree: Any, device: torch.device) -> Tuple[torch.Tensor,
                                                                            torch.Tensor]:
    """``(sizes, buffer)``: int64 [header bytes, payload bytes] and one uint8 buffer."""
    tensors: List[torch.Tensor] = []
    structure = _flatten(tree, tensors)
    specs = [[str(t.dtype), list(t.shape)] for t in tensors]
    header = json.dumps({"info": info, "tree": structure, "specs": specs}).encode()
    header += b" " * (-len(header) % _ALIGN)  # (JSON ignores trailing blanks)
    parts = [torch.frombuffer(bytearray(header), dtype=torch.uint8).to(device)]
    for t in tensors:  # raw bytes (a contiguous copy where needed), detached: never a graph
        raw = t.detach().to(device).contiguous().reshape(-1).view(torch.uint8)
        parts.append(raw)
        if raw.numel() % _ALIGN:  # every tensor starts aligned, so it can be viewed in place
            parts.append(torch.zeros(-raw.numel() % _ALIGN, dtype=torch.uint8, device=device))
    buffer = torch.cat(parts) if len(parts) > 1 else parts[0]
    sizes = torch.tensor([len(header), buffer.numel() - len(header)], dtype=torch.int64,
                         device=device)
    return sizes, buffer


def decode(sizes: torch.Tensor, buffer: torch.Tensor) -> Tuple[Dict[str, Any], Any]:
    """The ``(info, tree)`` that ``encode`` packed (tensors are views of ``buffer``)."""
    n_header = int(sizes[0])
    meta = json.loads(bytes(buffer[:n_header].cpu().numpy()).decode())
    tensors, offset = [], n_header
    for dtype_name, shape in meta["specs"]:
        dtype = _DTYPES[dtype_name]
        count = 1
        for s in shape:
            count *= s
        nbytes = count * torch.empty((), dtype=dtype).element_size()
        tensors.append(buffer[offset:offset + nbytes].view(dtype).view(shape))
        offset += nbytes + (-nbytes % _ALIGN)
    return meta["info"], _unflatten(meta["tree"], tensors)


@dataclass
class Link:
    """One direction of traffic with one peer rank: sends stay alive until done (an
    isend's buffer must not be freed before its work completes) and every wait has a
    timeout, so a dead or stalled peer ends this rank with a one-line PeerError."""

    peer: int
    device: torch.device
    timeout_s: float
    what: str  # e.g. "activations to rank 2", for the error message
    _pending: List[Tuple[Any, Tuple[torch.Tensor, ...]]] = field(default_factory=list)

    def send(self, info: Dict[str, Any], tree: Any = None) -> None:
        sizes, buffer = encode(info, tree, self.device)
        with collective(f"sending {self.what}", self.timeout_s):
            works = [dist.isend(sizes, self.peer), dist.isend(buffer, self.peer)]
        self._pending.append((works, (sizes, buffer)))
        self._reap()

    def recv(self) -> Tuple[Dict[str, Any], Any]:
        sizes = torch.empty(2, dtype=torch.int64, device=self.device)
        with collective(f"receiving {self.what}", self.timeout_s):
            self._wait(dist.irecv(sizes, self.peer))
            buffer = torch.empty(int(sizes.sum()), dtype=torch.uint8, device=self.device)
            self._wait(dist.irecv(buffer, self.peer))
        return decode(sizes, buffer)

    def flush(self) -> None:
        """Wait until every send has been taken by the peer (before exit or a checkpoint)."""
        with collective(f"sending {self.what}", self.timeout_s):
            for works, _ in self._pending:
                for w in works:
                    self._wait(w)
        self._pending.clear()

    def _wait(self, work: Any) -> None:
        if not work.wait(datetime.timedelta(seconds=self.timeout_s)):
            raise RuntimeError("timed out")

    def _reap(self) -> None:
        """Drop the buffers of sends that have completed."""
        self._pending = [(ws, bufs) for ws, bufs in self._pending
                         if not all(w.is_completed() for w in ws)]


def optional_link(peer: Optional[int], device: torch.device, timeout_s: float,
                  what: str) -> Optional[Link]:
    return None if peer is None else Link(peer, device, timeout_s, what)
