"""Where the time and memory of a local step go (issue 4): time and FLOPs by part of the
network (the two infopro+manpp rows that miss the FLOP-efficiency target), an op-level
CPU profile and the tensors autograd saves in one block of ResNet-32 K=16 infopro+manpp.

    .venv/bin/python benchmarks/profile_step.py
"""
from __future__ import annotations

import collections
import datetime
import json
import os
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from torch.profiler import ProfilerActivity, profile

from locallearn.config import TrainConfig
from locallearn.local_net import LocalNet
from locallearn.measure.bench import BenchSpec, _build, environment
from locallearn.measure.components import PartCost, component_profile
from locallearn.optim import BlockOptimizers

RESULTS = Path(__file__).resolve().parent / "results"
GROUPS = [("conv backward", ("convolution_backward",)), ("conv forward", ("convolution", "conv2d")),
          ("batch norm fwd+bwd", ("batch_norm",)), ("relu fwd+bwd", ("relu", "threshold", "clamp_min")),
          ("matmul (heads, SupCon)", ("mm", "addmm", "bmm", "matmul")),
          ("optimizer + EMA", ("_foreach", "lerp", "sgd")),
          ("resize (decoder)", ("upsample",)), ("loss ops", ("sigmoid", "log_softmax", "nll", "logsumexp"))]


def _group(name: str) -> str:
    for label, keys in GROUPS:
        if any(k in name for k in keys):
            return label
    return "other element-wise / copies"


def _setup(model: str, method: str, k: int) -> Tuple[LocalNet, torch.Tensor, torch.Tensor]:
    """The net and one random batch (128 Fashion-MNIST-shaped images, channels_last)."""
    net = _build(BenchSpec(model=model, batch_size=128, channels_last=True), method, k,
                 torch.device("cpu"))
    x = torch.randn(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    return net, x, torch.randint(0, 10, (128,))


def op_profile(method: str, k: int) -> Tuple[Dict[str, float], float]:
    net, x, y = _setup("resnet32", method, k)
    opt = BlockOptimizers(net, TrainConfig())

    def step() -> None:
        net.train_step(x, y, after_block=opt.after_block)
        opt.finish()
        net.ema_update()

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    shares: Dict[str, float] = collections.Counter()
    for ev in prof.key_averages():
        if ev.key.startswith("aten::"):
            shares[_group(ev.key)] += ev.self_cpu_time_total
    total = sum(shares.values())
    return {k: v / total for k, v in shares.items()}, total / 1e6


def parts_profile(model: str, method: str, k: int) -> Dict[str, PartCost]:
    """Seconds and GFLOP of each part of one step (``locallearn.measure.components``)."""
    net, x, y = _setup(model, method, k)
    return component_profile(net, BlockOptimizers(net, TrainConfig()), x, y)


def parts_table(model: str, method: str, k: int) -> List[str]:
    """Markdown rows: each part's share of the step's time and FLOPs and its FLOP rate
    relative to E2E's whole step (the issue's FLOP efficiency, per part)."""
    e2e = parts_profile(model, "e2e", 1)
    e2e_rate = sum(p.gflop for p in e2e.values()) / sum(p.seconds for p in e2e.values())
    loc = parts_profile(model, method, k)
    t_all = sum(p.seconds for p in loc.values())
    f_all = sum(p.gflop for p in loc.values())
    lines = [f"| part of {model} K={k} `{method}` | share of time | GFLOP (share) | "
             "FLOP rate / E2E's |", "|---|---|---|---|"]
    for name, p in sorted(loc.items(), key=lambda kv: -kv[1].seconds):
        rate = f"{p.gflop / p.seconds / e2e_rate:.2f}" if p.gflop > 0 and p.seconds > 0 else "-"
        lines.append(f"| {name} | {100 * p.seconds / t_all:.1f}% | {p.gflop:.1f} "
                     f"({100 * p.gflop / f_all:.0f}%) | {rate} |")
    lines.append(f"| whole step | 100% | {f_all:.1f} (100%) | {f_all / t_all / e2e_rate:.2f} |")
    return lines


def saved_in_block(method: str, k: int, j: int) -> Dict[str, float]:
    """Bytes autograd saves for block j's loss, by op, in units of one 16x28x28 map batch."""
    net, x, y = _setup("resnet32", method, k)
    unit = 128 * 16 * 28 * 28 * 4
    skip = {t.untyped_storage().data_ptr() for t in [*net.parameters(), *net.buffers()]}
    by: Dict[str, float] = collections.Counter()
    for jj, loss in net.block_losses(x, y):
        if jj < j:
            loss.backward()
            continue
        seen, stack, visited = set(), [loss.grad_fn], set()
        while stack:
            fn = stack.pop()
            if fn is None or fn in visited:
                continue
            visited.add(fn)
            for attr in dir(fn):
                if not attr.startswith("_saved_"):
                    continue
                try:
                    val = getattr(fn, attr)
                except RuntimeError:
                    continue
                for t in (val if isinstance(val, (list, tuple)) else [val]):
                    if isinstance(t, torch.Tensor) and t.numel() > 1:
                        key = t.untyped_storage().data_ptr()
                        if key in skip or key in seen:
                            continue
                        seen.add(key)
                        by[type(fn).__name__.replace("Backward0", "")] += t.untyped_storage().nbytes() / unit
            stack.extend(f for f, _ in fn.next_functions)
        break
    return dict(by)


def main() -> None:
    load = os.getloadavg()[0]
    lines = ["## Where the time and memory go (batch 128, CPU; issue 4)", "",
             f"Environment: {json.dumps(environment())}; date {datetime.date.today()}; "
             f"1-minute load average when it started: {load:.2f}.  ",
             "Command: `.venv/bin/python benchmarks/profile_step.py`", "",
             "By part of the network (`locallearn.measure.components`): CPU self time under "
             "torch.profiler of one full training step, forward work charged to the module "
             "running it, backward work to the module whose forward made it; FLOPs by "
             "`torch.utils.flop_counter`'s formulas, charged the same way. \"FLOP rate / "
             "E2E's\": the part's GFLOP/s over E2E's whole-step GFLOP/s (profiled the same "
             "way), i.e. the issue's FLOP efficiency part by part; \"-\": work the FLOP "
             "counter does not count (normalisation, element-wise, losses, optimizer).", ""]
    for model, method, k in (("resnet32", "infopro+manpp", 16), ("resnet110", "infopro+manpp", 55)):
        lines += parts_table(model, method, k) + [""]
    lines += ["Share of CPU time by op group in one full training step of ResNet-32 "
              "(torch.profiler, self time):", "",
              "| op group | e2e | infopro+manpp K=16 |", "|---|---|---|"]
    e2e, t_e2e = op_profile("e2e", 1)
    loc, t_loc = op_profile("infopro+manpp", 16)
    for label in sorted(set(e2e) | set(loc), key=lambda g: -loc.get(g, 0)):
        lines.append(f"| {label} | {100 * e2e.get(label, 0):.1f}% | {100 * loc.get(label, 0):.1f}% |")
    lines += [f"| total (profiled, s) | {t_e2e:.2f} | {t_loc:.2f} |", "",
              "Tensors autograd keeps for block 1 of ResNet-32 infopro+manpp K=16 (the peak "
              "block: its unit, the EMA and learnable copies of the next unit, the InfoPro "
              "decoder and classifier), in units of one batch of 16x28x28 float maps "
              "(6.1 MiB), by the op that saves them (each storage counted once):", "",
              "| saved by | maps |", "|---|---|"]
    for op, v in sorted(saved_in_block("infopro+manpp", 16, 1).items(), key=lambda kv: -kv[1]):
        if v >= 0.01:
            lines.append(f"| {op} | {v:.2f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "section_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
