"""`locallearn compare`: several runs side by side, in one figure and one table.

The papers' figures from the user's own runs: the test metric per epoch, each block's
probe and head accuracy, each block's CKA with an E2E run, time (and memory) per step.
Everything is read from the runs' files (``metrics.csv``, ``summary.json`` and, after
``locallearn analyze``, ``analysis.json``): nothing is recomputed.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from ..checkpoint import atomic_write_text
from ..errors import ConfigError
from ..run_dir import check_new_file
from .report import _plt, _save, check_comparable

#: what ``compare_runs`` writes into its ``out`` folder
FILES = ("compare.png", "compare.md")
#: summary.json's peak-memory key (written for CUDA runs only)
MEMORY_KEY = "cuda_max_memory_allocated"


def _float(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def read_run(run: Union[str, Path]) -> Dict[str, Any]:
    """A run's summary, metric rows and (when present) analysis, as plain data."""
    run = Path(run)
    path = run / "summary.json"
    if not path.is_file():
        raise ConfigError(f"{run} is not a run directory with results (no summary.json; "
                          "train it first)")
    try:
        summary = json.loads(path.read_text())
        rows = []
        if (run / "metrics.csv").is_file():
            with open(run / "metrics.csv", newline="") as f:
                rows = [{k: _float(v) for k, v in r.items()} for r in csv.DictReader(f)]
        analysis = json.loads((run / "analysis.json").read_text()) \
            if (run / "analysis.json").is_file() else None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the results of {run}: {e}") from None
    return {"dir": str(run), "summary": summary, "rows": rows, "analysis": analysis}


def _describe(summary: Dict[str, Any]) -> Dict[str, Any]:
    size = summary.get("image_size") or ["?", "?"]
    return {"task": summary.get("task", "classification"),
            "input": f"{summary.get('in_chans', '?')}x{size[0]}x{size[1]}"}


def _blocks(analysis: Optional[Dict[str, Any]], key: str) -> List[Optional[float]]:
    if not analysis:
        return []
    if key == "cka":
        return [m["cka"] for m in (analysis["cka"].get("matching") or [])]
    return [r[key] for r in analysis["block_rows"]]


def _shown(values: Sequence[Optional[float]], factor: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    return " / ".join("-" if v is None else f"{factor * v:.{digits}f}" for v in values)


def table_rows(runs: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per run: the numbers of the table (``format_table`` prints them)."""
    out = []
    for r in runs:
        s, a = r["summary"], r["analysis"]
        primary = (a or {}).get("primary") or _primary(s)
        memory = _float(s.get(MEMORY_KEY))
        out.append({
            "run": Path(r["dir"]).name or r["dir"], "model": s.get("model"),
            "method": s.get("method"), "blocks": s.get("blocks"), "metric": primary,
            "final": _float(s.get(f"final_test_{primary}")),
            "best": _float(s.get(f"best_test_{primary}")),
            "probe": _blocks(a, "probe_test_acc"), "head": _blocks(a, "head"),
            "cka": _blocks(a, "cka"), "sec_per_step": _float(s.get("sec_per_step")),
            "memory_mib": None if memory is None else memory / 2**20,
            "memory_note": None if memory is not None else
            f"not recorded (a {s.get('device', 'non-CUDA')} run: peak memory is measured on CUDA)",
            "analysed": a is not None})
    return out


def _primary(summary: Dict[str, Any]) -> str:
    keys = [k[len("final_test_"):] for k in summary if k.startswith("final_test_")]
    for k in ("acc", "miou", "map", "psnr"):
        if k in keys:
            return k
    return keys[0] if keys else "acc"


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    """A markdown table of ``table_rows`` (per-block values: block 0 / block 1 / ...)."""
    raw = rows and rows[0]["metric"] == "psnr"
    f = 1.0 if raw else 100.0
    unit = "dB" if raw else "%"
    head = ["run", "model", "method", "K", f"final {rows[0]['metric'] if rows else ''} ({unit})",
            f"best ({unit})", "probe acc per block (%)", "head per block", "CKA vs other per block",
            "s / step", "peak memory (MiB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["run"], str(r["model"]), str(r["method"]), str(r["blocks"]),
                 "-" if r["final"] is None else f"{f * r['final']:.2f}",
                 "-" if r["best"] is None else f"{f * r['best']:.2f}",
                 _shown(r["probe"]) if r["analysed"] else "no analysis.json",
                 _shown(r["head"], f) if r["analysed"] else "-",
                 _shown(r["cka"], 1.0, 2), "-" if r["sec_per_step"] is None else
                 f"{r['sec_per_step']:.4f}",
                 f"{r['memory_mib']:.0f}" if r["memory_mib"] is not None else r["memory_note"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_runs(runs: Sequence[Union[str, Path]], out: Union[str, Path] = ".", *,
                 force: bool = False) -> List[Dict[str, Any]]:
    """Write ``compare.png`` (one panel per comparison) and ``compare.md`` (the table)
    into the folder ``out`` for ``runs``; return the table rows. Runs of different tasks
    or input shapes are refused (one ConfigError line naming both)."""
    if not runs:
        raise ConfigError("compare needs at least one run directory")
    out = Path(out)
    for name in FILES:  # before reading anything: never replace a file silently
        check_new_file(out / name, force=force, what="compare output")
    read = [read_run(r) for r in runs]
    first = _describe(read[0]["summary"])
    for r in read[1:]:
        check_comparable(read[0]["dir"], first, r["dir"], _describe(r["summary"]),
                         why="compare puts runs of one task and input shape side by side")
    rows = table_rows(read)
    _save(_figure(read, rows), out / "compare.png")
    atomic_write_text(out / "compare.md", format_table(rows) + "\n")
    return rows


def _figure(runs: Sequence[Dict[str, Any]], rows: Sequence[Dict[str, Any]]) -> Any:
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    metric = rows[0]["metric"]
    f = 1.0 if metric == "psnr" else 100.0
    has_mem = any(r["memory_mib"] is not None for r in rows)
    fig, axes = plt.subplots(1, 5 if has_mem else 4, figsize=(5 * (5 if has_mem else 4), 4))
    ax_curve, ax_probe, ax_cka, ax_time = axes[:4]
    labels = [f"{r['run']} ({r['method']} K={r['blocks']})" for r in rows]
    for run, label in zip(runs, labels):
        pts = [(e["epoch"], e.get(f"test_{metric}")) for e in run["rows"]
               if e.get(f"test_{metric}") is not None]
        if pts:
            ax_curve.plot([p[0] for p in pts], [f * p[1] for p in pts], marker="o", label=label)
        a = run["analysis"]
        if not a:
            continue
        line = ax_probe.plot([p["unit"] for p in a["probes"] or []],
                             [float("nan") if p["test_acc"] is None else 100 * p["test_acc"]
                              for p in a["probes"] or []], label=f"{label} probe")
        color = line[0].get_color() if line else None
        heads = [b for b in a["block_rows"] if b["head"] is not None]
        ax_probe.plot([b["end_unit"] for b in heads], [f * b["head"] for b in heads],
                      ls="", marker="s", color=color, label=f"{label} heads")
        matching = a["cka"].get("matching") or []
        if matching:
            ax_cka.plot([m["unit"] for m in matching],
                        [float("nan") if m["cka"] is None else m["cka"] for m in matching],
                        marker="o", label=label)
    unit = "dB" if metric == "psnr" else "%"
    ax_curve.set(xlabel="epoch", ylabel=f"test {metric} ({unit})", title=f"test {metric} per epoch")
    ax_curve.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_probe.set(xlabel="unit (depth)", ylabel=f"probe accuracy (%) / head {metric} ({unit})",
                 title="linear probe (line) and block heads (squares)")
    ax_cka.set(xlabel="block's last unit (depth)", ylabel="CKA", ylim=(0, 1.05),
               title="CKA with the --against run per block")
    if not any(r["analysed"] for r in rows):
        for ax in (ax_probe, ax_cka):
            ax.text(0.5, 0.5, "no analysis.json: run\nlocallearn analyze first",
                    ha="center", va="center", transform=ax.transAxes)
    secs = [r["sec_per_step"] or 0.0 for r in rows]
    ax_time.bar(range(len(rows)), secs)
    ax_time.set(ylabel="seconds per step (median epoch)", title="time per step")
    if has_mem:
        axes[4].bar(range(len(rows)), [r["memory_mib"] or 0.0 for r in rows])
        axes[4].set(ylabel="MiB", title="peak CUDA memory")
    for ax in axes[3:]:
        ax.set_xticks(range(len(rows)), [r["run"] for r in rows], rotation=30, ha="right")
    for ax in axes[:3]:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
