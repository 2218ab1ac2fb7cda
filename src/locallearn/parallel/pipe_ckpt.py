"""Checkpoints of a pipeline run: one file per rank, and a manifest naming the set.

Each rank writes ``pipeline/rank{r}-step{S}.pt`` (its blocks, their optimizer state, its
mirror and the EMA weights still in flight); once every rank has written, rank 0
replaces ``checkpoint.pt`` by a manifest naming step S; only then are older files
deleted. A kill at any moment leaves a manifest that names a complete, consistent set.
``load_run`` / ``eval`` / ``export`` read a pipeline run through ``merged_checkpoint``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from ..errors import ConfigError
from ..stop import PeerError
from .ddp import any_rank

FOLDER = "pipeline"


def rank_file(out: Path, rank: int, step: int) -> Path:
    return Path(out) / FOLDER / f"rank{rank}-step{step}.pt"


def remove_old(out: Path, rank: int, keep: Path) -> None:
    """Delete this rank's files other than ``keep`` (superseded by the manifest)."""
    folder = Path(out) / FOLDER
    for p in folder.glob(f"rank{rank}-step*.pt"):
        if p != keep:
            p.unlink(missing_ok=True)


def _saved_rank_file(out: Path, info: Dict[str, Any], rank: int) -> Path:
    path = rank_file(out, rank, info["step"])
    if not path.is_file():
        raise ConfigError(f"the pipeline checkpoint of {out} lacks {path} (step {info['step']})")
    return path


def load_rank_state(out: Path, manifest: Dict[str, Any], rank: int, world: int) -> Dict[str, Any]:
    """This rank's share of the checkpoint that ``manifest`` names."""
    info = manifest["pipeline"]
    if info["world"] != world:
        raise ConfigError(f"{out} was checkpointed by a pipeline of {info['world']} ranks; "
                          f"resume it with --nproc-per-node {info['world']} (got {world})")
    return load_checkpoint(_saved_rank_file(out, info, rank))


def merged_checkpoint(out: Path, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """A single-process checkpoint (``net``, ``identity``, ``history``) assembled from
    the ranks' files, so that eval and export treat a pipeline run like any run."""
    info = manifest["pipeline"]
    net: Dict[str, Any] = {}
    states: List[Dict[str, Any]] = []
    for r in range(info["world"]):
        states.append(load_checkpoint(_saved_rank_file(out, info, r)))
        net.update(states[-1]["net"])
    return {**manifest, "net": net, "history": states[0].get("history", [])}


class Checkpointing:
    """The pipeline runner's checkpoint and resume (``pipeline._Runner`` mixes it in)."""

    def _checkpoint(self, epoch_done: int, mid: bool = False, batch: int = 0) -> None:
        """Every rank writes its file, then rank 0 the manifest (and the run files)."""
        from ..train import _identity, write_run_files

        path = rank_file(self.out, self.rank, self.step)
        st = self.stage
        state = {"net": st.state_dict(), "optimizer": self.opt.state_dict(),
                 "epoch": epoch_done, "step": self.step, "history": self.rows,
                 "torch_rng": torch.get_rng_state(), "wall_time_s": self.wall,
                 "mirror": st.mirror.state_dict() if st.mirror is not None else {},
                 "pending": {str(k): v for k, v in self.pending.items()},
                 "identity": {**_identity(self.cfg, self.net), "rank": self.rank,
                              "world": self.world, "owned": [st.first, st.last]}}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.main:
            state["data_rng"] = self.epoch_rng if mid else self.gen.get_state()
        if mid:
            state.update(batch=batch, loss_sum=self.loss_sum.detach().cpu(),
                         epoch_seconds=time.perf_counter() - self.t0)
        error: Optional[BaseException] = None
        try:
            save_checkpoint(path, state)
        except Exception as e:  # reported once the ranks agreed, below
            error = e
        self._agree_write(error, "writing its checkpoint")
        if self.main:
            try:
                save_checkpoint(self.out / CHECKPOINT, {"pipeline": {
                    "step": self.step, "world": self.world, "epoch": epoch_done}})
                if not mid:
                    write_run_files(self.cfg, self.net, self.rows, self.wall, self.device,
                                    self.data, self.out)
            except Exception as e:
                error = e
        self._agree_write(error, "writing the manifest and run files")
        remove_old(self.out, self.rank, keep=path)
        self.saved_at = f"epoch {epoch_done}" + (f" batch {batch}" if mid else "")

    def _agree_write(self, error: Optional[BaseException], what: str) -> None:
        (failed,) = any_rank([error is not None], self.device, self.timeout, what)
        if error is not None:
            raise error
        if failed:
            raise PeerError(f"rank {self.rank}: another rank failed {what} (see its message)")

    def _resume(self) -> None:
        manifest = load_checkpoint(self.out / CHECKPOINT, merge_pipeline=False)
        if "pipeline" not in manifest:
            raise ConfigError(f"{self.out} holds a single-process checkpoint; resume it "
                              "without --pipeline")
        state = load_rank_state(self.out, manifest, self.rank, self.world)
        if state["identity"].get("owned") != [self.stage.first, self.stage.last]:
            raise ConfigError(f"rank {self.rank}'s checkpoint holds blocks "
                              f"{state['identity'].get('owned')}, this run gives it "
                              f"{[self.stage.first, self.stage.last]}")
        self.stage.load_state_dict(state["net"])
        self.opt.load_state_dict(state["optimizer"])
        if self.stage.mirror is not None:
            self.stage.mirror.load_state_dict(state["mirror"])
        self.pending = {int(k): [t.to(self.device) for t in v]
                        for k, v in state["pending"].items()}
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.rows, self.epoch, self.step = list(state["history"]), state["epoch"], state["step"]
        self.wall = state["wall_time_s"]
        if self.main:
            self.gen.set_state(state["data_rng"])
        if state.get("batch", 0):
            self.first_batch = state["batch"]
            self.loss_sum = state["loss_sum"].to(self.device)
            self.carry_s = state["epoch_seconds"]
        self.saved_at = f"epoch {self.epoch}" + (f" batch {self.first_batch}"
                                                 if self.first_batch else "")

