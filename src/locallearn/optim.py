"""One optimizer per block, stepped right after that block's backward."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

import torch

from .config import OPTIMIZERS, TrainConfig
from .errors import choice_error
from .local_net import LocalNet


def make_optimizer(params: List[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``params``: SGD (momentum, Nesterov) or AdamW (default betas)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise choice_error("optimizer", cfg.optimizer, OPTIMIZERS)


class BlockOptimizers:
    """One optimizer (``cfg.optimizer``) for each block's parameters (units + head + bridge).

    ``after_block(j)`` clips block j's gradient norm (``cfg.clip_grad_norm`` > 0), steps
    it and drops its gradients (``set_to_none``), so only one block's gradients are alive
    at a time. With a GradScaler (fp16) each block is unscaled/stepped by the scaler and
    ``finish`` updates the scale once.
    """

    def __init__(self, net: LocalNet, cfg: TrainConfig,
                 scaler: Optional[torch.amp.GradScaler] = None,
                 blocks: Optional[Iterable[int]] = None) -> None:
        self.scaler = scaler
        self.clip = float(cfg.clip_grad_norm)
        self.opts: List[Optional[torch.optim.Optimizer]] = []
        mine = set(range(net.k) if blocks is None else blocks)  # a pipeline stage: its own
        for j in range(net.k):
            params = net.block_parameters(j) if j in mine else []
            self.opts.append(make_optimizer(params, cfg) if params else None)

    def set_lr(self, lr: float) -> None:
        for opt in self.opts:
            for group in (opt.param_groups if opt is not None else []):
                group["lr"] = lr

    def after_block(self, j: int) -> None:
        opt = self.opts[j]
        if opt is None:
            return
        if self.clip > 0:
            if self.scaler is not None:  # clip the true gradients; scaler.step won't unscale twice
                self.scaler.unscale_(opt)
            # per block: each block's norm is its own loss's, not the whole network's
            params = [p for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip)
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
        """Every optimizer-state tensor (momentum buffers, Adam moments), e.g. for memory
        accounting."""
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
