"""Checkpoints of a pipeline run: one file per rank, and a manifest naming the set.

Each rank writes ``pipeline/rank{r}-step{S}.pt`` (its blocks, their optimizer state, its
mirror and the EMA weights still in flight); once every rank has written, rank 0
replaces ``checkpoint.pt`` by a manifest naming step S; only then are older files
deleted. A kill at any moment leaves a manifest that names a complete, consistent set.
``load_run`` / ``eval`` / ``export`` read a pipeline run through ``merged_checkpoint``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from ..checkpoint import load_checkpoint
from ..errors import ConfigError

FOLDER = "pipeline"


def rank_file(out: Path, rank: int, step: int) -> Path:
    return Path(out) / FOLDER / f"rank{rank}-step{step}.pt"


def remove_old(out: Path, rank: int, keep: Path) -> None:
    """Delete this rank's files other than ``keep`` (superseded by the manifest)."""
    folder = Path(out) / FOLDER
    for p in folder.glob(f"rank{rank}-step*.pt"):
        if p != keep:
            p.unlink(missing_ok=True)


def load_rank_state(out: Path, manifest: Dict[str, Any], rank: int, world: int) -> Dict[str, Any]:
    """This rank's share of the checkpoint that ``manifest`` names."""
    info = manifest["pipeline"]
    if info["world"] != world:
        raise ConfigError(f"{out} was checkpointed by a pipeline of {info['world']} ranks; "
                          f"resume it with --nproc-per-node {info['world']} (got {world})")
    path = rank_file(out, rank, info["step"])
    if not path.is_file():
        raise ConfigError(f"the pipeline checkpoint of {out} lacks {path} (step {info['step']})")
    return load_checkpoint(path)


def merged_checkpoint(out: Path, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """A single-process checkpoint (``net``, ``identity``, ``history``) assembled from
    the ranks' files, so that eval and export treat a pipeline run like any run."""
    info = manifest["pipeline"]
    net: Dict[str, Any] = {}
    states: List[Dict[str, Any]] = []
    for r in range(info["world"]):
        path = rank_file(out, r, info["step"])
        if not path.is_file():
            raise ConfigError(f"the pipeline checkpoint of {out} lacks {path}")
        states.append(load_checkpoint(path))
        net.update(states[-1]["net"])
    return {**manifest, "net": net, "history": states[0].get("history", [])}
