"""One optimizer per block, stepped right after that block's backward."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from .config import TrainConfig
from .local_net import LocalNet


class BlockOptimizers:
    """SGD (Nesterov) for each block's parameters (units + head + bridge).

    ``after_block(j)`` steps block j and drops its gradients (``set_to_none``), so
    only one block's gradients are alive at a time. With a GradScaler (fp16) each
    block is unscaled/stepped by the scaler and ``finish`` updates the scale once.
    """

    def __init__(self, net: LocalNet, cfg: TrainConfig,
                 scaler: Optional[torch.amp.GradScaler] = None) -> None:
        self.scaler = scaler
        self.opts: List[Optional[torch.optim.SGD]] = []
        for j in range(net.k):
            params = net.block_parameters(j)
            self.opts.append(torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                             nesterov=cfg.nesterov,
                                             weight_decay=cfg.weight_decay) if params else None)

    def set_lr(self, lr: float) -> None:
        for opt in self.opts:
            for group in (opt.param_groups if opt is not None else []):
                group["lr"] = lr

    def after_block(self, j: int) -> None:
        opt = self.opts[j]
        if opt is None:
            return
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    def finish(self) -> None:
        """End of a step: update the loss scale (fp16) once for all blocks."""
        if self.scaler is not None:
            self.scaler.update()

    def state_tensors(self) -> List[torch.Tensor]:
        """Every optimizer-state tensor (momentum buffers), e.g. for memory accounting."""
        return [t for o in self.opts if o is not None for st in o.state.values()
                for t in st.values() if isinstance(t, torch.Tensor)]

    def state_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"blocks": [o.state_dict() if o is not None else {} for o in self.opts]}
        if self.scaler is not None:
            out["scaler"] = self.scaler.state_dict()
        return out

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for opt, s in zip(self.opts, state["blocks"]):
            if opt is not None:
                opt.load_state_dict(s)
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
