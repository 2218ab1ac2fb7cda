"""The main job: ResNet-32 on Fashion-MNIST, E2E vs InfoPro+MAN++ (K=8), in a few minutes.

The picture (``demo.png``) tells what local learning is for, in three panels: test
accuracy over training steps for both runs, the memory of one training step (the
saving), and the test accuracy of every block of the local network on its own.

Accuracy during training is measured without touching the training loop: each run is
trained in segments, ``fit(..., stop_after_steps=s)`` then ``fit(resume=True)``, and
evaluated from its checkpoint at the end of each segment. A stop there is a checkpoint
as a kill would leave it, and a resume continues bit-identically (the data order, the
augmentation draws and the one cosine learning-rate schedule over the whole run are
those of an uninterrupted run), so the runs are the very runs an uninterrupted ``fit``
trains; the cost is re-opening the run and one pass over the test set per point.

Each block's accuracy is its own head's (``head_report``) where the head has class
scores; the demo's InfoPro heads on ResNet-32 end in a contrastive (SupCon) projection,
which has none, so for those blocks it is a linear probe on the block's output (as
``locallearn analyze`` fits them, on ``PROBE_SAMPLES`` training images, tested on the
demo's test set). The last block's is the network's own accuracy.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from .checkpoint import atomic_write_text, load_checkpoint
from .config import TrainConfig
from .data import ImageData, load_dataset
from .devices import resolve_device
from .errors import ConfigError
from .evaluate import evaluate, head_report
from .local_net import LocalNet
from .measure import measure_step_memory
from .plots import plot_demo
from .run_dir import CHECKPOINT, CONFIG
from .train import build_net, fit, restore_net

MB = 2.0 ** 20
#: test-accuracy points per epoch on the step curve (the last one is fit's own evaluation;
#: each other one costs a pass over the test set, about 5 training steps of the demo)
EVALS_PER_EPOCH = 3
#: the per-run file of the step curve (step, epoch, test_acc), next to metrics.csv
STEPS_FILE = "steps.csv"
#: training images a block's linear probe is fit on (where its head has no class scores)
PROBE_SAMPLES = 2000
TITLE = "ResNet-32 on Fashion-MNIST: E2E vs InfoPro+MAN++"


def _step_memory(cfg: TrainConfig, data: ImageData) -> Dict[str, float]:
    """Measure one training step of a fresh net of ``cfg`` (the meter, and CUDA's own peak).

    Each block's gradients are dropped right after its backward, as ``fit`` steps them
    (``BlockOptimizers.after_block``): a local net holds one block's gradients at a time."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    net = build_net(cfg, data).to(device)
    x, y = next(iter(data.test_batches(cfg.batch_size, device)))

    def drop_grads(j: int) -> None:
        for p in net.block_parameters(j):
            p.grad = None

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    mem = measure_step_memory(net, x, y, after_block=drop_grads)
    out = {"activation_mb": mem.activation_bytes / MB, "total_mb": mem.total / MB}
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / MB
    return out


def _check_same_demo(cfg: TrainConfig) -> None:
    """A rerun reuses the runs in ``out``: refuse when they were trained for another budget
    (their results would silently stand for the new one)."""
    saved = Path(cfg.out) / "config.json"
    if not saved.is_file():
        return
    old = TrainConfig.load(saved)
    diff = [f"{k}={getattr(old, k)!r}" for k in ("epochs", "limit_train", "limit_test", "blocks")
            if getattr(old, k) != getattr(cfg, k)]
    if diff:
        raise ConfigError(f"{cfg.out} holds a demo run with {', '.join(diff)}; delete it or "
                          "pass another --out to run this budget")


def eval_steps(steps_per_epoch: int, epochs: int, per_epoch: int = EVALS_PER_EPOCH) -> List[int]:
    """The steps at which the demo evaluates: ``per_epoch`` evenly spaced points in each
    epoch, the last at its end (fewer when an epoch has fewer steps)."""
    per = max(1, min(per_epoch, steps_per_epoch))
    within = sorted({round(steps_per_epoch * i / per) for i in range(1, per + 1)})
    return [e * steps_per_epoch + s for e in range(epochs) for s in within if s > 0]


def run_demo(out: Path = Path("runs/demo"), epochs: int = 2, limit_train: Optional[int] = 10000,
             limit_test: Optional[int] = 2000, blocks: int = 8, device: str = "auto",
             data_dir: Optional[str] = None, progress: bool = True,
             download: bool = False) -> List[Dict[str, object]]:
    """Train E2E and ``infopro+manpp`` with the same budget; print a table, write
    ``out/demo.png`` (accuracy over steps, step memory, per-block accuracy) and each
    run's ``steps.csv`` (the step curve).

    Returns one row per run: ``method``, ``K``, ``test_acc`` (final), ``sec_per_step``,
    ``activation_mb`` / ``total_mb`` (one training step; ``cuda_peak_mb`` on CUDA),
    ``activation_saving`` / ``total_saving`` (fraction saved against E2E; 0 for E2E),
    ``curve`` (``(step, test_acc)`` points), ``head_acc`` (the test accuracy of each
    block's own predictor, K values, the last the network's; None for a head without
    class scores), ``block_acc`` (K values: the head's, else a linear probe's on the
    block's output) and ``block_acc_from`` (``"head"``, ``"probe"`` or ``"network"``)."""
    out = Path(out)
    cfgs = [TrainConfig(model="resnet32", method=method, blocks=k, dataset="fashion-mnist",
                        data_dir=data_dir, download=download, epochs=epochs,
                        batch_size=128, lr=0.1,
                        limit_train=limit_train, limit_test=limit_test, device=device,
                        channels_last=True, out=str(out / method.replace("+", "_"))).validate()
            for method, k in (("e2e", 1), ("infopro+manpp", blocks))]
    for cfg in cfgs:  # before any training: a rerun must mean the same demo
        _check_same_demo(cfg)
    dev = resolve_device(device)
    base = cfgs[0]
    data = load_dataset(base.dataset, data_dir=data_dir, limit_train=limit_train,
                        limit_test=limit_test, download=download, seed=base.seed)
    # fit's own count (drop_last); an empty epoch is left to fit to report
    steps_per_epoch = len(data.train_batches(base.batch_size, torch.Generator(), dev))
    points = eval_steps(steps_per_epoch, epochs)
    rows: List[Dict[str, object]] = []
    for cfg in cfgs:
        if progress:
            resuming = (Path(cfg.out) / CONFIG).is_file()
            print(f"== {cfg.method} (K={cfg.blocks}) -> {cfg.out}"
                  f"{'  [resuming]' if resuming else ''}", flush=True)
        summary, curve = _train_with_curve(cfg, data, dev, points, steps_per_epoch, progress)
        history = json.loads((Path(cfg.out) / "summary.json").read_text())
        if cfg.blocks > 1:
            heads, blocks_acc, kinds = _block_accuracy(Path(cfg.out), data, dev, cfg.seed,
                                                       summary["final_test_acc"])
        else:  # one block: its only predictor is the network, already evaluated by fit
            final = summary["final_test_acc"]
            heads, blocks_acc, kinds = [final], [final], ["network"]
        rows.append({"method": cfg.method, "K": cfg.blocks, "test_acc": summary["final_test_acc"],
                     "sec_per_step": history["sec_per_step"], **_step_memory(cfg, data),
                     "curve": curve, "head_acc": heads, "block_acc": blocks_acc,
                     "block_acc_from": kinds})
    for r in rows:
        for key in ("activation", "total"):
            r[f"{key}_saving"] = 1.0 - float(r[f"{key}_mb"]) / float(rows[0][f"{key}_mb"])
    plot_path = out / "demo.png"
    labels = [f"{r['method']} K={r['K']}" for r in rows]
    plot_demo({lb: r["curve"] for lb, r in zip(labels, rows)},
              {lb: {k: float(r[k]) for k in ("activation_mb", "total_mb")}
               for lb, r in zip(labels, rows)},
              rows[-1]["block_acc"], (labels[0], float(rows[0]["test_acc"])), plot_path,
              title=(f"{TITLE} (K={blocks}) — {epochs} epoch(s) x {data.num_train} samples, "
                     f"batch {base.batch_size} ({epochs * steps_per_epoch} steps), "
                     f"{len(data.test_y)} test images, {_device_name(dev)}"),
              steps_per_epoch=steps_per_epoch, heads_label=labels[-1],
              kinds=rows[-1]["block_acc_from"])
    _print_table(rows, epochs, data.num_train)
    print(f"plot: {plot_path}   runs: {out}/*/ (metrics.csv, {STEPS_FILE}, summary.json, "
          "curves.png)")
    return rows


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"CPU ({torch.get_num_threads()} threads)"
    return str(device)


def _train_with_curve(cfg: TrainConfig, data: ImageData, device: torch.device,
                      points: List[int], steps_per_epoch: int,
                      progress: bool) -> Tuple[Dict[str, object], List[Tuple[int, float]]]:
    """Train ``cfg`` to its end, stopping at each of ``points`` to evaluate the checkpoint;
    return fit's summary and the ``(step, test_acc)`` curve. A rerun reuses the points
    saved in the run's ``steps.csv`` and continues (or reuses) the run."""
    run = Path(cfg.out)
    done = _checkpoint_step(run)
    # only points the checkpoint has passed are real: a run that restarted (killed before
    # its first checkpoint) measures them again
    curve = {s: a for s, a in _read_curve(run).items() if s <= done}
    at_epoch_end = _epoch_end_accs(run, steps_per_epoch)
    resume = (run / CONFIG).is_file()
    test = data.test_batches(cfg.eval_batch_size, device, channels_last=cfg.channels_last)
    for p in points:
        if p in curve:
            continue
        if p in at_epoch_end and p <= done:  # fit's own evaluation at that epoch's end
            curve[p] = at_epoch_end[p]
        elif p < done:  # passed without a measurement (e.g. killed right after the save)
            continue
        else:
            if p > done:
                fit(cfg, resume=resume, progress=progress, stop_after_steps=p)
                resume, done = True, p
            at_epoch_end = _epoch_end_accs(run, steps_per_epoch)
            if p in at_epoch_end:
                curve[p] = at_epoch_end[p]
            else:
                net, step = _net_from_checkpoint(run, data, device)
                if step != p:  # fit stops exactly there; anything else is a bug to show
                    raise RuntimeError(f"{run}: checkpoint at step {step}, expected {p}")
                curve[p] = evaluate(net, test, device)
        if progress:
            print(f"   step {p}: test acc {100 * curve[p]:.2f}%", flush=True)
        _write_curve(run, curve, steps_per_epoch)
    summary = fit(cfg, resume=resume, progress=progress)  # a finished run: only its summary
    return summary, sorted(curve.items())


def _block_accuracy(run: Path, data: ImageData, device: torch.device, seed: int,
                    final_acc: float) -> Tuple[List[Optional[float]], List[float], List[str]]:
    """Per block of the finished run: its head's test accuracy (None without class
    scores; the last is the network's, ``final_acc`` as fit measured it), the accuracy
    shown (the head's, else a linear probe's on the block's output) and where that
    comes from."""
    net, _ = _net_from_checkpoint(run, data, device)
    net.eval()
    test = data.test_batches(512, device)
    with torch.no_grad():  # which heads have class scores at all: one tiny batch tells
        scored = [s is not None for s in net.head_logits(next(iter(test))[0][:2])]
    if any(scored[:-1]):
        heads = [r["test_acc"] for r in head_report(net, test, device)]
    else:  # a pass over the test set would only repeat fit's final evaluation
        heads = [None] * (net.k - 1) + [final_acc]
    accs: List[float] = list(heads)
    kinds = ["head"] * (net.k - 1) + ["network"]
    missing = [j for j, a in enumerate(heads) if a is None]
    if missing:
        # imported here: only a head without class scores needs the analysis tools
        from .analysis.features import block_ends, probe_features
        from .analysis.probe import train_probe

        gen = torch.Generator().manual_seed(seed)
        # drop_last: a batch no larger than the set, so a tiny set still gives one
        batches = data.train_batches(min(512, data.num_train), gen, device, augment=False)
        train = probe_features(net, batches, min(PROBE_SAMPLES, data.num_train), seed=seed)
        tested = probe_features(net, test, len(data.test_y), seed=seed + 1)
        ends = block_ends(net)
        with _one_thread():  # L-BFGS on [2000, <=64]: threads cost 10x more than they save
            for j in missing:
                (fx, fy), (tx, ty) = train[ends[j]], tested[ends[j]]
                accs[j] = train_probe(fx, fy, tx, ty, net.model.num_classes,
                                      seed=seed)["test_acc"]
                kinds[j] = "probe"
    return heads, accs, kinds


@contextlib.contextmanager
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _net_from_checkpoint(run: Path, data: ImageData,
                         device: torch.device) -> Tuple[LocalNet, int]:
    """The run's net as its checkpoint holds it, and the step it was saved at."""
    cfg = TrainConfig.load(run / CONFIG)  # the resolved objective fit saved
    net, step = restore_net(run, cfg, data)
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net, step


def _checkpoint_step(run: Path) -> int:
    if not (run / CHECKPOINT).is_file():
        return 0
    return int(load_checkpoint(run / CHECKPOINT)["step"])


def _epoch_end_accs(run: Path, steps_per_epoch: int) -> Dict[int, float]:
    """fit's test accuracy after each finished epoch, by step."""
    if not (run / "metrics.csv").is_file():
        return {}
    return {int(r["epoch"]) * steps_per_epoch: r["test_acc"] for r in _read_rows(run)}


def _read_curve(run: Path) -> Dict[int, float]:
    path = run / STEPS_FILE
    if not path.is_file():
        return {}
    with open(path) as f:
        return {int(r["step"]): float(r["test_acc"]) for r in csv.DictReader(f)}


def _write_curve(run: Path, curve: Dict[int, float], steps_per_epoch: int) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["step", "epoch", "test_acc"])
    for s, acc in sorted(curve.items()):
        writer.writerow([s, f"{s / steps_per_epoch:.4g}", acc])
    atomic_write_text(run / STEPS_FILE, buf.getvalue())


def _read_rows(run: Path) -> List[Dict[str, float]]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def _print_table(rows: List[Dict[str, object]], epochs: int, num_train: int) -> None:
    cuda = any("cuda_peak_mb" in r for r in rows)
    head = (f"{'method':16s} {'K':>3s} {'test acc':>9s} {'s/step':>8s} {'act. MB':>8s} "
            f"{'total MB':>9s} {'act. saved':>11s} {'total saved':>12s}")
    head += f" {'CUDA peak MB':>13s}" if cuda else ""
    print(f"\nResNet-32, Fashion-MNIST, {epochs} epoch(s) on {num_train} samples, "
          "batch 128 (memory: one training step, gradients dropped per block as fit does; "
          "act. = tensors saved for backward; saved = vs E2E)")
    print(head)
    print("-" * len(head))
    for r in rows:
        line = (f"{r['method']:16s} {r['K']:>3d} {100 * float(r['test_acc']):>8.2f}% "
                f"{float(r['sec_per_step']):>8.3f} {float(r['activation_mb']):>8.1f} "
                f"{float(r['total_mb']):>9.1f} "
                f"{100 * float(r['activation_saving']):>10.1f}% "
                f"{100 * float(r['total_saving']):>11.1f}%")
        if cuda:
            line += f" {float(r['cuda_peak_mb']):>13.1f}"
        print(line)
    for r in rows:
        if int(r["K"]) > 1:
            mark = {"head": "", "probe": "p", "network": ""}
            accs = " ".join(f"{100 * a:.1f}{mark[k]}"
                            for a, k in zip(r["block_acc"], r["block_acc_from"]))
            print(f"{r['method']} K={r['K']}, test acc (%) per block, the last the network "
                  f"(p: linear probe on the block's output, its head has no class scores): "
                  f"{accs}")
