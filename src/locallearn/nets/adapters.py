"""Turn users' models into UnitNets: an adapter per family, unit sizes found by a dry run."""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..errors import ConfigError, ConfigTypeError
from .checks import as_int, as_size
from .units import UnitInfo, UnitNet

#: (name, predicate, adapter) in the order they are tried; the adapter returns
#: (units, names, default_head); the last unit is the task head.
Adapter = Callable[[nn.Module], Tuple[List[nn.Module], List[str], str]]
ADAPTERS: List[Tuple[str, Callable[[nn.Module], bool], Adapter]] = []

#: InfoPro's ImageNet recipe for CNN backbones: 5 * BCE + 0.75 * CE at every head; the
#: decoder convolves before upsampling and the classifier's conv is capped at 256
#: channels (features of 1024 channels at 1/16 resolution would make each head larger
#: than a quarter of ResNet-101)
IMAGENET_INFOPRO = {"ixx": (5.0, 5.0), "ixy": (0.75, 0.75), "loss": "ce", "decoder": "conv_first",
                    "max_width": 256}

HOW_TO = ("write an adapter: a function returning (units, names, default_head) whose units, "
          "run in order, reproduce model(x) and share its modules, registered with "
          "locallearn.nets.adapters.register_adapter(name, predicate, adapter) "
          "(README: 'Bring your own model')")


def register_adapter(name: str, predicate: Callable[[nn.Module], bool], adapter: Adapter) -> None:
    """Add an adapter; the first one whose predicate accepts a model is used."""
    if any(n == name for n, _, _ in ADAPTERS):
        raise ValueError(f"duplicate adapter name {name!r}")
    ADAPTERS.append((name, predicate, adapter))


@torch.no_grad()
def probe_info(units: Sequence[nn.Module], names: Sequence[str], in_chans: int,
               image_size: Tuple[int, int]) -> List[UnitInfo]:
    """Run a dummy batch through the units (eval mode) and read each output's size."""
    modes = [m.training for m in units]
    for u in units:
        u.eval()
    try:
        param = next((p for u in units for p in u.parameters()), None)
        x = torch.zeros(2, in_chans, *image_size,
                        device=param.device if param is not None else "cpu",
                        dtype=param.dtype if param is not None else torch.float32)
        info = []
        for i, (unit, name) in enumerate(zip(units, names)):
            try:
                x = unit(x)
            except ConfigError:
                raise
            except (RuntimeError, AssertionError, ValueError) as err:
                # e.g. a wrong in_chans, or an image too small for the strides / patches
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise ConfigError(f"the model cannot run a {in_chans}-channel "
                                  f"{image_size[0]}x{image_size[1]} image (check in_chans= and "
                                  f"image_size=): unit {name!r} failed: {first}") from err
            last = i == len(units) - 1
            if x.dim() == 4:
                info.append(UnitInfo(name, x.shape[1], max(1, round(image_size[0] / x.shape[2]))))
            elif x.dim() == 3:
                # N = patches (+ a few class/register tokens): the grid side is floor(sqrt(N))
                grid = max(1, math.isqrt(x.shape[1]))
                info.append(UnitInfo(name, x.shape[2], max(1, image_size[0] // grid),
                                     layout="tokens"))
            elif x.dim() == 2 and last:
                info.append(UnitInfo(name, x.shape[1], info[-1].reduction if info else 1,
                                     kind="head"))
            else:
                raise ConfigError(f"unit {name!r} outputs shape {tuple(x.shape)}; body units must "
                                  "output [B, C, H, W] maps or [B, N, C] tokens and the last "
                                  "unit [B, classes] logits")
        if info[-1].kind != "head":
            info[-1] = UnitInfo(info[-1].name, info[-1].channels, info[-1].reduction, kind="head")
        return info
    finally:
        for u, m in zip(units, modes):
            u.train(m)


def to_unitnet(model: nn.Module, image_size: Tuple[int, int] = (224, 224),
               in_chans: Optional[int] = None, num_classes: Optional[int] = None) -> UnitNet:
    """Return ``model`` itself if it is a UnitNet, else its units via the first fitting adapter."""
    if isinstance(model, UnitNet):
        return model
    if not isinstance(model, nn.Module):
        raise ConfigTypeError(f"model must be a torch.nn.Module, got {_describe(model)}")
    size = as_size("image_size", image_size, allow_int=True)
    if in_chans is not None:
        in_chans = as_int("in_chans", in_chans, 1)
    if num_classes is not None:
        num_classes = as_int("num_classes", num_classes, 1)
    for name, predicate, adapter in ADAPTERS:
        if predicate(model):
            units, names, default_head = adapter(model)
            chans = in_chans if in_chans is not None else _guess_in_chans(model)
            info = probe_info(units, names, chans, size)
            classes = info[-1].channels
            if num_classes is not None and num_classes != classes:
                # the heads and the label check would disagree with the model's classifier
                raise ConfigError(f"num_classes={num_classes} but the model's last unit "
                                  f"{names[-1]!r} outputs {classes} class scores; pass "
                                  f"num_classes={classes} or leave it out")
            opts = IMAGENET_INFOPRO if default_head == "infopro" else None
            net = UnitNet(units, info, chans, classes, source=model, default_head=default_head,
                          default_head_opts=opts, input_size=(chans, *size))
            if info[0].layout == "tokens":
                net.lb_depth = 2  # MAN++'s ViT code: LB copies the next two blocks
            return net
    raise ConfigError(f"no adapter for {type(model).__module__}.{type(model).__name__}; supported: "
                      f"{', '.join(n for n, _, _ in ADAPTERS)}. To add one, {HOW_TO}")


def _describe(value: object) -> str:
    return "None" if value is None else f"{type(value).__name__} {value!r}"[:120]


def _guess_in_chans(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if isinstance(first, nn.Conv2d):
        return first.in_channels
    raise ConfigError(f"cannot tell the input channels of {type(model).__name__}; pass in_chans=")


def _sequential(model: nn.Module) -> Tuple[List[nn.Module], List[str], str]:
    children = list(model.named_children())
    if len(children) < 2:
        raise ConfigError("an nn.Sequential needs at least two children (body units and a head)")
    return [m for _, m in children], [n for n, _ in children], "greedy"


# nn.Sequential last: any more specific adapter registered before it wins
register_adapter("nn.Sequential", lambda m: type(m) is nn.Sequential, _sequential)
