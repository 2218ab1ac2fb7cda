"""Export the plain backbone (heads and bridges dropped) as safetensors, and load it back."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import ConfigError, ConfigTypeError
from .local_net import LocalNet
from .nets import UnitNet, create_model


def export_backbone(net: LocalNet, path: Path, meta: Dict[str, object]) -> Path:
    """Write ``net.model``'s weights (loadable by ``create_model(...)``) to ``path``."""
    tensors = {k: v.detach().to("cpu").contiguous()
               for k, v in net.model.export_state_dict().items()}
    metadata = {k: json.dumps(v) for k, v in meta.items()}
    path = Path(path)
    from .checkpoint import atomic_write

    # temp file + rename: a kill or a full disk never leaves half a file at ``path``
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def load_backbone(path: Path) -> UnitNet:
    """Create the registered model named in the file's metadata and load its weights.

    Anything but an exported safetensors file (a missing path, a directory, a run's
    ``checkpoint.pt``, another file) raises ConfigError saying what it is and what to do.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigTypeError(f"path must be a file path (str or os.PathLike), got {path!r}")
    path = Path(path)
    if path.is_dir():
        hint = (f"; export its weights first: locallearn export --run {path} --out FILE"
                if (path / "checkpoint.pt").is_file() else "")
        raise ConfigError(f"{path} is a directory, not an exported .safetensors file{hint}")
    if not path.is_file():
        raise ConfigError(f"no exported weights at {path}: no such file")
    kind = _file_kind(path)
    if kind != "safetensors":
        raise ConfigError(f"{path} is {kind}, not exported safetensors weights; "
                          f"{_how_to_load(path)}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        meta = {k: json.loads(v) for k, v in raw.items()}
    except (SafetensorError, ValueError, OSError) as err:  # a truncated / corrupt file
        raise ConfigError(f"{path} is not a readable safetensors file, truncated or corrupt "
                          f"({err})") from None
    if "model" not in meta:
        raise ConfigError(f"{path} has no locallearn metadata (model name); "
                          "load it with create_model(...).load_state_dict(load_file(path))")
    missing = [k for k in ("num_classes", "in_chans") if k not in meta]
    if missing:
        raise ConfigError(f"{path}'s locallearn metadata lacks {', '.join(missing)}")
    size = meta.get("image_size")
    model = create_model(meta["model"], num_classes=meta["num_classes"],
                         in_chans=meta["in_chans"], image_size=tuple(size) if size else None)
    target = model.source if model.source is not None else model
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{path} is not a readable safetensors file, truncated or corrupt "
                          f"({err})") from None
    mismatch = _mismatch(target.state_dict(), state)
    if mismatch:
        raise ConfigError(f"{path}: the weights do not fit model {meta['model']!r} "
                          f"(num_classes={meta['num_classes']}, in_chans={meta['in_chans']}): "
                          f"{mismatch}")
    target.load_state_dict(state, strict=True)
    return model.eval()


def _how_to_load(path: Path) -> str:
    run = path.parent if path.name == "checkpoint.pt" else Path("RUN_DIR")
    return ("a locallearn run's checkpoint.pt becomes a backbone file with "
            f"`locallearn export --run {run} --out FILE.safetensors`; a torch.save'd state dict "
            "loads with model.load_state_dict(torch.load(path, weights_only=True))")


def _mismatch(expected: Dict[str, torch.Tensor], got: Dict[str, torch.Tensor]) -> str:
    """What keeps ``got`` from loading strictly into a model with ``expected``, in one line
    ("" when it loads): load_state_dict's own error spans many lines."""
    parts = []
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [k for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    if missing:
        parts.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(got[k].shape)} in the "
                     f"file, {tuple(expected[k].shape)} in the model)")
    return "; ".join(parts)


def _file_kind(path: Path) -> str:
    """Tell a safetensors file (8-byte little-endian header length, then a JSON object)
    from torch.save's zip / pickle formats by their first bytes, without unpickling."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return "a PyTorch checkpoint (torch.save zip archive)"
    if head[:1] == b"\x80":
        return "a pickle file (legacy torch.save format)"
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: opening it tells if it is whole
        return "safetensors"
    return "a file of unknown format" if head else "an empty file"
