"""Export the plain backbone (heads and bridges dropped) as safetensors, and load it back."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .errors import ConfigError
from .local_net import LocalNet
from .nets import UnitNet, create_model


def export_backbone(net: LocalNet, path: Path, meta: Dict[str, object]) -> Path:
    """Write ``net.model``'s weights (loadable by ``create_model(...)``) to ``path``."""
    tensors = {k: v.detach().to("cpu").contiguous()
               for k, v in net.model.export_state_dict().items()}
    metadata = {k: json.dumps(v) for k, v in meta.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_backbone(path: Path) -> UnitNet:
    """Create the registered model named in the file's metadata and load its weights."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no exported weights at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    if "model" not in meta:
        raise ConfigError(f"{path} has no locallearn metadata (model name); "
                          "load it with create_model(...).load_state_dict(load_file(path))")
    size = meta.get("image_size")
    model = create_model(meta["model"], num_classes=int(meta["num_classes"]),
                         in_chans=int(meta["in_chans"]), image_size=tuple(size) if size else None)
    target = model.source if model.source is not None else model
    target.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


