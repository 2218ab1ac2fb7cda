"""timm VisionTransformer as units (optional: registered only when timm is installed)."""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, List, Optional, Tuple

import torch
from torch import nn

from .adapters import register_adapter, to_unitnet
from .registry import MODELS
from .units import UnitNet

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

# timm is imported only when one of its models is built or wrapped (it costs about half a
# second of every process's start-up); its names are registered when it is installed
HAVE_TIMM = importlib.util.find_spec("timm") is not None


def _is_timm_vit(m: nn.Module) -> bool:
    """A timm VisionTransformer (or subclass); timm is loaded only for a timm module."""
    if not any(c.__module__.startswith("timm.") for c in type(m).__mro__):
        return False
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(m, VisionTransformer)


class TimmVitStem(nn.Module):
    """patch_embed -> cls/pos embedding -> patch_drop -> norm_pre, as timm does."""

    def __init__(self, vit: "VisionTransformer") -> None:
        super().__init__()
        self.patch_embed, self.patch_drop, self.norm_pre = vit.patch_embed, vit.patch_drop, vit.norm_pre
        self.pos_drop = vit.pos_drop
        # the embeddings are parameters of the ViT itself: share them here
        for name in ("cls_token", "reg_token", "pos_embed"):
            if getattr(vit, name, None) is not None:
                setattr(self, name, getattr(vit, name))
        object.__setattr__(self, "vit", vit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.vit._pos_embed(self.patch_embed(x))
        return self.norm_pre(self.patch_drop(x))


class TimmVitHead(nn.Module):
    def __init__(self, vit: "VisionTransformer") -> None:
        super().__init__()
        self.norm, self.fc_norm, self.head_drop, self.head = vit.norm, vit.fc_norm, vit.head_drop, vit.head
        if getattr(vit, "attn_pool", None) is not None:
            self.attn_pool = vit.attn_pool
        object.__setattr__(self, "vit", vit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_head(self.norm(x))


def _timm_vit(m: "VisionTransformer") -> Tuple[List[nn.Module], List[str], str]:
    blocks = list(m.blocks)
    return ([TimmVitStem(m), *blocks, TimmVitHead(m)],
            ["stem", *[f"blocks.{i}" for i in range(len(blocks))], "head"], "vit")


VITS = ["vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224"]

if HAVE_TIMM:
    register_adapter("timm VisionTransformer", _is_timm_vit, _timm_vit)

    def _register(name: str) -> None:
        def build(num_classes: int = 1000, in_chans: int = 3,
                  image_size: Optional[Tuple[int, int]] = None) -> UnitNet:
            import timm

            size = tuple(image_size) if image_size else (224, 224)
            m = timm.create_model(name, pretrained=False, num_classes=num_classes,
                                  in_chans=in_chans, img_size=size)
            return to_unitnet(m, size, in_chans, num_classes)

        build.__doc__ = f"timm {name} (random init) as units."
        MODELS.add(f"timm:{name}", build)

    for _name in VITS:
        _register(_name)
