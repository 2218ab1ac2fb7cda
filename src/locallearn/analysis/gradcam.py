"""Grad-CAM (Selvaraju et al. 2017) of the final classifier and of each local head."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..bank import FeatureBank
from ..local_net import LocalNet
from ..nets.units import run_unit

#: tasks without a Grad-CAM here, and why: a detector's output is anchors decoded through
#: NMS (no single differentiable class score per image), and a super-resolution output is
#: an image, not class scores
SKIPPED = {"detection": "detection outputs are anchor boxes decoded through NMS: there is "
                        "no single differentiable class score per image to explain",
           "super_resolution": "a super-resolution output is an image, not class scores"}


def _as_maps(a: torch.Tensor, layout: str) -> torch.Tensor:
    """Tokens [B, N, C] as maps [B, C, g, g] (the last g*g tokens: the patches after any
    class / register tokens); maps stay as they are."""
    if layout != "tokens" or a.dim() != 3:
        return a
    g = math.isqrt(a.shape[1])
    return a[:, a.shape[1] - g * g:].transpose(1, 2).reshape(a.shape[0], a.shape[2], g, g)


def normalise(cam: torch.Tensor) -> torch.Tensor:
    """Each map [B, H, W] scaled to [0, 1] (min to max; a flat map becomes 0)."""
    flat = cam.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    span = (hi - lo).clamp_min(1e-12)
    out = (flat - lo[:, None]) / span[:, None]
    return torch.where((hi - lo)[:, None] > 0, out, torch.zeros_like(out)).view_as(cam)


def grad_cam(activation: torch.Tensor, score: torch.Tensor, size: Tuple[int, int],
             layout: str = "maps") -> torch.Tensor:
    """Grad-CAM of ``score`` [B] at ``activation`` (a tensor ``score`` was computed from):
    channel weights = spatial mean of d score / d A, map = relu(sum_c w_c A_c), upsampled
    bilinearly to ``size`` and normalised to [0, 1] per image. Returns [B, H, W]."""
    (grad,) = torch.autograd.grad(score.sum(), activation, retain_graph=True)
    a, g = _as_maps(activation.detach(), layout), _as_maps(grad, layout)
    if a.dim() != 4:
        raise ValueError(f"Grad-CAM needs feature maps [B, C, H, W], got {tuple(a.shape)}")
    weights = g.mean((2, 3), keepdim=True)
    cam = F.relu((weights * a).sum(1, keepdim=True)).float()
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    return normalise(cam)


def task_score(task: str, output: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
    """The score [B] Grad-CAM explains: the target class's logit (classification; the true
    label, else the predicted class); for segmentation the predicted class's logit summed
    over the pixels it is predicted at."""
    if task == "segmentation":
        pred = output.argmax(1, keepdim=True)
        return output.gather(1, pred).flatten(1).sum(1)
    cls = output.argmax(1) if target is None else target.long()
    return output.gather(1, cls[:, None])[:, 0]


def localnet_gradcam(net: LocalNet, x: torch.Tensor, target: Optional[torch.Tensor] = None
                     ) -> Tuple[List[str], torch.Tensor, Dict[str, str]]:
    """Grad-CAM of each local head (at its block's output, through its bridge) and of the
    final classifier (at the last body unit's output, before the task unit) for images
    ``x``; ``target`` the classes to explain (default: the predicted ones).

    Returns (method names, maps [B, methods, H, W] in [0, 1], notes per method that has no
    map, e.g. a head without class scores: its maps are zero)."""
    task = net.task.name
    if task in SKIPPED:
        raise ValueError(f"no Grad-CAM for {task}: {SKIPPED[task]}")
    model = net.model
    info = model.unit_info
    ends = {end - 1: j for j, (_, end) in enumerate(net.ranges)}
    size = (int(x.shape[-2]), int(x.shape[-1]))
    x = x.detach().requires_grad_(True)  # a graph even if every parameter is frozen
    bank = FeatureBank(x.detach(), net.mean, net.std)
    names: List[str] = []
    found: List[Optional[Tuple[torch.Tensor, torch.Tensor, str]]] = []
    notes: Dict[str, str] = {}
    with torch.enable_grad():
        h = x
        for i in range(model.num_body_units):
            h = run_unit(model.units[i], info[i], h, bank)
            j = ends.get(i)
            if j is None or j == net.k - 1:
                continue
            # head j reads block j's output as it does in training, at this point of the walk
            # (the bank holds only what was written before it)
            name = f"head {j}"
            names.append(name)
            head = net.heads[j]
            inp = net._head_input(j, h)
            scores = head.logits(inp, bank) if getattr(head, "needs_bank", False) else \
                head.logits(inp)
            if scores is None:
                notes[name] = "this head has no class scores (e.g. a contrastive head)"
                found.append(None)
            else:
                found.append((h, task_score(task, scores, target), info[i].layout))
        out = run_unit(model.units[-1], info[-1], h, bank)
        names.append("final")
        found.append((h, task_score(task, out, target), info[model.num_body_units - 1].layout))
        maps = [torch.zeros(x.shape[0], *size, device=x.device) if f is None
                else grad_cam(f[0], f[1], size, f[2]) for f in found]
    return names, torch.stack(maps, 1).detach(), notes
