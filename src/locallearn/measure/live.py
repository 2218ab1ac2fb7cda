"""Peak bytes of all live tensors during a region: a CPU analogue of CUDA's
``max_memory_allocated``.

A ``TorchDispatchMode`` sees the output of every op (forward, backward, optimizer,
recomputation inside ``torch.utils.checkpoint``); each new storage is counted from
its creation until Python finalizes it, once however many views share it. Tensors
that already exist when the region starts (parameters, buffers, optimizer state, the
batch) are counted from the start when passed as ``existing``. Not counted: memory
that never becomes a tensor (oneDNN/cuDNN workspaces), allocator slack, and storages
resized in place.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Iterable, Optional, Union

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LivePeak(TorchDispatchMode):
    """``with LivePeak(device, existing) as lp: ...`` then ``lp.peak`` (bytes)."""

    def __init__(self, device: Union[str, torch.device] = "cpu",
                 existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.current = 0
        self.peak = 0
        self._live: Dict[int, Any] = {}  # StorageImpl address -> weakref to its storage
        for t in existing:
            self._track(t)

    def _track(self, t: Any) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type != self.device.type:
            return
        st = t.untyped_storage()
        key = st._cdata  # address of the StorageImpl: unique while it is alive
        if key in self._live or st.nbytes() == 0:
            return
        nbytes = st.nbytes()
        self._live[key] = weakref.ref(st, lambda _, key=key, n=nbytes: self._free(key, n))
        self.current += nbytes
        self.peak = max(self.peak, self.current)

    def _free(self, key: int, nbytes: int) -> None:
        if self._live.pop(key, None) is not None:
            self.current -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Optional[Dict[str, Any]] = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            self._track(t)
        return out


def live_peak(fn: Callable[[], Any], device: Union[str, torch.device],
              existing: Iterable[torch.Tensor] = ()) -> int:
    """Run ``fn()`` once under ``LivePeak``; return its peak live bytes on ``device``."""
    with LivePeak(device, existing) as lp:
        fn()
    return lp.peak
