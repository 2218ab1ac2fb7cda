"""Issue 15: what one short GPU sitting showed of the papers' recipe on Fashion-MNIST.

Reads the trainers' epoch lines kept in benchmarks/results/paper_calibration_h100.log
(`reproduce.py --budget paper`, six trainers sharing an H100 under MPS, stopped after
160 s; the run directories did not come back, only these lines) and writes
benchmarks/results/section_paper_calibration.md.

    .venv/bin/python benchmarks/paper_calibration.py
"""
from __future__ import annotations

import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

RESULTS = Path(__file__).resolve().parent / "results"
LOG = RESULTS / "paper_calibration_h100.log"
HEADER = re.compile(r"^== paper: (\S+) K=\d+ seed (\d+)")
EPOCH = re.compile(r"^epoch (\d+)/(\d+)\s+\S+ K=\d+\s+train_loss (\S+)\s+test_acc ([\d.]+)%\s+([\d.]+)s")


def parse(text: str) -> Dict[str, List[Tuple[int, int, float, float, float]]]:
    """method -> (epoch, epochs, train loss, test acc %, seconds) in log order; the
    method is the one of the last header line (each log holds one method's trainers)."""
    out: Dict[str, List[Tuple[int, int, float, float, float]]] = defaultdict(list)
    method = "?"
    for line in text.splitlines():
        if (m := HEADER.match(line)):
            method = m.group(1)
        elif (m := EPOCH.match(line)):
            out[method].append((int(m.group(1)), int(m.group(2)), float(m.group(3)),
                                float(m.group(4)), float(m.group(5))))
    return out


def section(runs: Dict[str, List[Tuple[int, int, float, float, float]]]) -> str:
    lines = ["## The papers' recipe in one short GPU sitting (issue 15, calibration)", "",
             "`reproduce.py --budget paper`: ResNet-32 K=16 on all 60k Fashion-MNIST images, "
             "batch 1024, lr 0.8, the reference's per-epoch cosine over 20 epochs with a "
             "1-epoch warm-up from 0.01; six trainers sharing one NVIDIA H100 80GB HBM3 under "
             "MPS (torch 2.11.0+cu130), 2026-11-26, stopped after 160 s. Only the trainers' "
             "epoch lines came back (`benchmarks/results/paper_calibration_h100.log`; several "
             "seeds of one method share a log, so a line is not tied to a seed).", "",
             "| method | trainers | epochs reached | s / epoch (median) | train loss after "
             "epochs 1, 2, 3 | test acc % at the last epoch reached |", "|---|---|---|---|---|---|"]
    for method, rows in runs.items():
        last = max(r[0] for r in rows)
        per_epoch = defaultdict(list)
        for e, _, loss, _, _ in rows:
            per_epoch[e].append(loss)
        early = ", ".join("/".join(f"{v:.2f}" for v in per_epoch[e]) for e in (1, 2, 3)
                          if e in per_epoch)
        trainers = len(per_epoch[1])
        accs = [r[3] for r in rows if r[0] == last]
        lines.append(f"| {method} | {trainers} | {last} of {rows[0][1]} | "
                     f"{statistics.median(r[4] for r in rows):.1f} | {early} | "
                     f"{', '.join(f'{a:.2f}' for a in accs)} |")
    e2e = [r[3] for r in runs.get("e2e", []) if r[0] == r[1]]
    manpp = [r[4] for r in runs.get("dgl+manpp", [])]
    lines += ["", "What it says: at this recipe every method's training loss rises after the "
              "one-epoch warm-up (epoch 2 above epoch 1)"
              + (f", and E2E ends its 20 epochs at {statistics.mean(e2e):.2f}% against "
                 f"{plateau_e2e():.2f}% for the batch-128 `plateau` budget (10 epochs)"
                 if e2e else "")
              + ". The most likely reason: lr 0.8 at batch 1024 needs the papers' 10-epoch "
              "warm-up and 400 epochs; a short schedule cannot hold either."
              + (f" At {statistics.median(manpp):.0f} s an epoch for DGL+MAN++ (sharing "
                 "the GPU), 400 epochs take hours" if manpp else "")
              + f", and a run cannot be carried from one 15-minute sitting to the next: its "
              f"checkpoint (weights and momentum buffers of the backbone, the 15 DGL heads and "
              f"the bridges) is {checkpoint_mb():.0f} MB, more than a sitting brings back "
              "(64 MB)."]
    return "\n".join(lines) + "\n"


def plateau_e2e() -> float:
    """E2E's mean final test accuracy (%) of the kept plateau-budget runs."""
    import csv

    accs = []
    for run in sorted((RESULTS / "reproduce" / "plateau").glob("e2e_K16_s*")):
        with open(run / "metrics.csv") as f:
            accs.append(100 * float(list(csv.DictReader(f))[-1]["test_acc"]))
    return statistics.mean(accs)


def checkpoint_mb() -> float:
    """Weights + SGD momentum of ResNet-32 K=16 DGL+MAN++ on 28x28 images, in MiB."""
    import torch

    from locallearn import LocalNet
    from locallearn.nets.cifar_resnet import CifarResNet

    with torch.device("meta"):
        net = LocalNet(CifarResNet(32, in_chans=1), 16, "dgl+manpp", image_size=(28, 28))
    params = list(net.parameters())
    count = sum(p.numel() for p in params) + sum(p.numel() for p in params if p.requires_grad)
    return 4 * count / 2 ** 20


def main() -> None:
    (RESULTS / "section_paper_calibration.md").write_text(section(parse(LOG.read_text())))


if __name__ == "__main__":
    main()
