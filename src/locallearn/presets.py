"""Named presets: the reference code's README commands as sets of TrainConfig options.

A preset is a recipe, not a code path: it only fills TrainConfig fields, each of which
can also be set by hand (and a field given by hand wins). ``locallearn list`` shows
them; ``locallearn train --preset NAME`` prints what it set.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Tuple

from .config import TrainConfig
from .methods import parse_method
from .registry import Registry


@dataclass(frozen=True)
class Preset:
    """``source``: the command it reproduces; ``settings``: TrainConfig field -> value."""

    source: str
    settings: Dict[str, Any] = field(default_factory=dict)
    notes: str = ""


PRESETS: Registry[Preset] = Registry("preset")

# The CIFAR-10 / SVHN recipe of the MAN / MAN++ training scripts with --cos_lr: batch
# 1024, lr 0.8, SGD Nesterov 0.9, wd 1e-4, 400 epochs, a 10-epoch warm-up from 0.01
# blended into a per-epoch cosine; the reference's K tables (K=16 on ResNet-32).
_CIFAR_RECIPE: Dict[str, Any] = dict(
    model="resnet32", blocks=16, split="reference", epochs=400, batch_size=1024, lr=0.8,
    momentum=0.9, nesterov=True, weight_decay=1e-4, warmup_epochs=10.0,
    warmup_start_lr=0.01, lr_schedule="epoch")
# what the reference's model code does around the bridge: the README's EMA momentum,
# the EMA update right after each block's backward (pre-step weights), the EMA / LB
# copies and the heads' convs redrawn by its weight-init loop
_REFERENCE_BRIDGE: Dict[str, Any] = dict(
    lb="unit", ema_momentum=0.995, ema_timing="before-step", bridge_init="reference",
    head_init="reference")
# the InfoPro heads of the MAN++ CIFAR script with its README flags (--local_loss_mode
# cross_entropy --ixx_1 5 --ixy_1 0.5 --ixx_2 0 --ixy_2 0, the script's 2c2f
# classifier), weights interpolated by stage number over K-2 as its code does; its
# first head (after the stem) is built with the class defaults instead: 1c2f + SupCon
# (averaged over all anchors), fixed weights 5 / 0.5
_INFOPRO_HEADS: Dict[str, Any] = dict(
    head_opts=dict(loss="ce", classifier="2c2f", ixx=(5.0, 0.0), ixy=(0.5, 0.0),
                   interp="stage", widen=1.0, feature_dim=128, supcon_mean="all"),
    head_overrides={"0": dict(classifier="1c2f", loss="supcon", ixx=5.0, ixy=0.5)})

PRESETS.add("manpp-cifar-dgl", Preset(
    source="MAN++ repository README: train_DGL.py --model resnet --layers 32 "
           "--local_module_num 16 --arch resnetDGL_MANPP --aux_net_feature_dim 128 "
           "--momentum 0.995 --cos_lr (CIFAR-10)",
    settings={**_CIFAR_RECIPE, **_REFERENCE_BRIDGE, "method": "dgl+manpp",
              # the reference's DGL head pools to exactly 8x8 (up from 7x7 on 28x28)
              "head_opts": dict(pool_exact=True)}))
PRESETS.add("manpp-cifar-infopro", Preset(
    source="MAN++ repository README: train.py --dataset cifar10 --model resnet --layers 32 "
           "--local_module_num 16 --arch resnetInfoPro_MANPP --local_loss_mode "
           "cross_entropy --aux_net_widen 1 --aux_net_feature_dim 128 --ixx_1 5 "
           "--ixy_1 0.5 --ixx_2 0 --ixy_2 0 --momentum 0.995 --cos_lr",
    settings={**_CIFAR_RECIPE, **_REFERENCE_BRIDGE, **_INFOPRO_HEADS,
              "method": "infopro+manpp"}))

# The MAN (ECCV 2024) code: LB(h) + EMA(h) without a scale, no module for the stem (it
# joins the first module of the table: K=16 is 15 blocks), every head built from the
# script's options (2c2f, CE with the README's flags); the same recipe, EMA timing and
# weight-init loop as MAN++
PRESETS.add("man-cifar-infopro", Preset(
    source="MAN repository README: train.py --layers 32 --local_module_num 16 --cos_lr "
           "--local_loss_mode cross_entropy --aux_net_widen 1 --aux_net_feature_dim 128 "
           "--ixx_1 5 --ixy_1 0.5 --ixx_2 0 --ixy_2 0 --momentum 0.995 --droprate 0.0",
    settings={**_CIFAR_RECIPE, **_REFERENCE_BRIDGE, "split": "reference-man",
              "method": "infopro+man",
              "head_opts": {k: v for k, v in _INFOPRO_HEADS["head_opts"].items()
                            if k != "supcon_mean"}}))

# The MAN++ COCO code (Exp_on_COCO): RetinaNet, K=4 at the ResNet's stages ([stem +
# layer1], [layer2], [layer3], [layer4 + FPN + head]; EMA sources layer2[0], layer3[0],
# layer4[0]), small RetinaNet heads on the local P3 / P4 / P5-P7 (the greedy family's
# detection predictor), SGD lr 0.01, momentum 0.9, wd 1e-4, gradient norm clipped at 1.0
# per block. Its bridges start random (weights copied before its init); ours start as
# exact copies, the paper's intent (--bridge-init random to match it).
PRESETS.add("manpp-coco-retinanet", Preset(
    source="MAN++ repository Exp_on_COCO (RetinaNet, ResNet-34/101/152 backbones, K=4)",
    settings={"model": "retinanet_resnet34", "method": "greedy+manpp", "blocks": 4,
              "split": "stages", "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
              "nesterov": False, "weight_decay": 1e-4, "clip_grad_norm": 1.0,
              "warmup_epochs": 0.0, "ema_momentum": 0.995}))

#: fields that only a method with local heads uses, and those only a bridge uses
HEAD_FIELDS = ("blocks", "split", "boundaries", "head_opts", "head_overrides", "head_init")
BRIDGE_FIELDS = ("lb", "ema_momentum", "ema_timing", "bridge_init")


def list_presets() -> List[str]:
    return PRESETS.names()


def preset_settings(name: str, method: str) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The settings of preset ``name`` that apply to ``method`` (which may differ from
    the preset's own, e.g. ``e2e`` under the same recipe), and, for those that do not,
    why not."""
    preset = PRESETS.get(name)
    spec, own = parse_method(method), parse_method(preset.settings.get("method", method))
    out: Dict[str, Any] = {}
    skipped: Dict[str, str] = {}
    for key, value in preset.settings.items():
        if key == "method":
            continue
        if spec.is_e2e and key in HEAD_FIELDS:
            skipped[key] = "e2e has no local heads"
        elif spec.bridge is None and key in BRIDGE_FIELDS:
            skipped[key] = f"{spec} has no MAN/MAN++ bridge"
        elif key in ("head_opts", "head_overrides") and spec.head not in (own.head, "auto"):
            skipped[key] = f"they are {own.head} head options, the method's head is {spec.head}"
        else:
            out[key] = value
    return out, skipped


def apply_preset(cfg: TrainConfig, name: str, given: Iterable[str] = ()) -> List[str]:
    """Fill ``cfg`` from preset ``name``, except the fields in ``given`` (set by hand,
    they win; given ``head_opts`` / ``head_overrides`` are merged over the preset's).
    ``cfg.method`` is the preset's unless given. Returns lines saying what was set,
    kept and left out, for the user to read."""
    preset, given = PRESETS.get(name), set(given)
    if "method" not in given and "method" in preset.settings:
        cfg.method = preset.settings["method"]
    settings, skipped = preset_settings(name, cfg.method)
    done, kept = [f"method={cfg.method}"], []
    for key, value in settings.items():
        if key in ("head_opts", "head_overrides"):
            mine = getattr(cfg, key) if key in given else {}
            merged = {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
            for k, v in mine.items():  # a per-head dict merges option by option
                merged[k] = {**merged.get(k, {}), **v} if isinstance(v, dict) else v
            setattr(cfg, key, merged)
            done.append(f"{key}={_show(value)}")
            if mine:
                kept.append(f"{key} {_show(mine)} (merged over the preset's)")
        elif key in given:
            kept.append(f"{key}={_show(getattr(cfg, key))} (preset: {_show(value)})")
        elif key == "warmup_epochs" and "epochs" in given and "epochs" in settings:
            # a shorter schedule keeps the warm-up's share of it (10 of 400: 2.5%)
            cfg.warmup_epochs = value * cfg.epochs / settings["epochs"]
            none = (cfg.warmup_epochs < 1 and settings.get("lr_schedule") == "epoch"
                    and "lr_schedule" not in given)
            done.append(f"warmup_epochs={cfg.warmup_epochs:g} (the preset's {value:g} of "
                        f"{settings['epochs']} epochs, scaled to {cfg.epochs}"
                        + ("; under one epoch, so the per-epoch schedule warms up not at all:"
                           " pass --warmup-epochs to keep one" if none else "") + ")")
        else:
            setattr(cfg, key, value)
            done.append(f"{key}={_show(value)}")
    opts = cfg.head_opts
    if (opts.get("interp") == "stage" and cfg.split.startswith("reference")
            and "interp_over" not in opts and cfg.blocks > 2):
        # the reference divides the stage number by its own K - 2, whatever number of
        # blocks its table makes of that K (its K=8 is 9 blocks with MAN++)
        opts["interp_over"] = cfg.blocks - 2
        done.append(f"head_opts.interp_over={cfg.blocks - 2} (the reference's K - 2)")
    cfg.preset = name
    lines = [f"preset {name} ({preset.source})", "  sets: " + ", ".join(done)]
    if kept:
        lines.append("  kept as given: " + ", ".join(kept))
    if skipped:
        lines.append("  not used here: " + "; ".join(f"{k} ({why})" for k, why in skipped.items()))
    return lines


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        return ",".join(_show(v) for v in value)
    return str(value)
