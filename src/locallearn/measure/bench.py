"""`locallearn bench memory|speed`: one training step of E2E and local methods, as ratios."""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import torch
from torch.utils._pytree import tree_flatten
import torch.nn.functional as F

from ..config import TrainConfig
from ..devices import resolve_device
from ..errors import ConfigError, check_choice
from ..local_net import LocalNet
from ..methods import parse_method
from ..nets import create_model
from ..optim import BlockOptimizers
from .flops import step_flops
from .live import live_peak
from .memory import measure_step_memory
from .timing import median, time_interleaved

MODES = ("memory", "speed")
RATIO_FIELDS = ("peak_bytes", "param_bytes", "grad_bytes", "optim_bytes", "activation_bytes",
                "live_peak_bytes", "step_time_s", "flops_per_step", "cuda_peak_bytes")


@dataclass
class BenchSpec:
    """What to measure: every (method, K) pair plus E2E, on random inputs."""

    model: str = "resnet32"
    methods: Sequence[str] = ("e2e",)
    blocks: Sequence[int] = (1,)
    batch_size: int = 128
    device: str = "cpu"
    image_size: Union[int, Tuple[int, int]] = 28  # side, or (H, W)
    in_chans: int = 1
    num_classes: int = 10
    channels_last: bool = True
    warmup: int = 2
    repeats: int = 5
    head_opts: Dict[str, Any] = field(default_factory=dict)
    lb: str = "unit"
    recompute: bool = False
    split: str = "equal"

    @property
    def hw(self) -> Tuple[int, int]:
        """(H, W) of the input."""
        s = self.image_size
        return (int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1]))

    def pairs(self) -> List[Tuple[str, int]]:
        """E2E first (the reference of every ratio), then each local method at each K."""
        out = [("e2e", 1)]
        for m in self.methods:
            spec = parse_method(m)
            if not spec.is_e2e:
                out.extend((str(spec), int(k)) for k in self.blocks)
        return out


def _build(spec: BenchSpec, method: str, k: int, device: torch.device) -> LocalNet:
    torch.manual_seed(0)
    model = create_model(spec.model, num_classes=spec.num_classes, in_chans=spec.in_chans)
    net = LocalNet(model, k, method, image_size=spec.hw,
                   head_opts=spec.head_opts, lb=spec.lb, recompute=spec.recompute,
                   split_by=spec.split).to(device)
    if spec.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def _full_step(net: LocalNet, opt: BlockOptimizers, x: torch.Tensor,
               y: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        net.train_step(x, y, after_block=opt.after_block)
        opt.finish()
        net.ema_update()

    return step


def warm_cuda_libraries(device: torch.device) -> None:
    """Create cuBLAS / cuBLASLt / cuDNN state now. Their workspaces (tens of MB on a
    Hopper GPU) are taken from the caching allocator at the first matrix product and
    kept for the life of the process: made before a measurement, they count among the
    process's other memory instead of the first measured step's peak."""
    a = torch.randn(64, 64, device=device, requires_grad=True)
    (F.linear(a, a, a[0]) @ a).sum().backward()  # addmm (cuBLASLt) and mm (cuBLAS)
    c = torch.randn(2, 4, 8, 8, device=device, requires_grad=True)
    F.conv2d(c, torch.randn(4, 4, 3, 3, device=device, requires_grad=True), padding=1).sum().backward()
    torch.cuda.synchronize(device)


def measure_pair(spec: BenchSpec, method: str, k: int) -> Tuple[Dict[str, Any], Callable[[], None]]:
    """Measure one (method, K)'s memory parts and FLOPs; return the row and its step
    (``run_bench`` times the steps of all pairs in turns)."""
    device = resolve_device(spec.device)
    # other pairs' nets stay alive for the timing: leave their memory out of the CUDA peak
    others = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    net = _build(spec, method, k, device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(spec.batch_size, spec.in_chans, *spec.hw, generator=g)
    y = net.task.example_target(spec.batch_size, spec.hw, spec.num_classes, g)
    x, y = x.to(device), net.task.to_device(y, device)
    if spec.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    opt = BlockOptimizers(net, TrainConfig())
    step = _full_step(net, opt, x, y)
    row: Dict[str, Any] = {"model": spec.model, "method": method, "blocks": net.k,
                           "batch_size": spec.batch_size, "device": str(device)}
    row["flops_per_step"] = step_flops(net, x, y)
    net.zero_grad(set_to_none=True)
    mem = measure_step_memory(net, x, y, after_block=opt.after_block)
    row.update(mem.to_dict())
    if spec.recompute and net.bridges:
        # torch.utils.checkpoint holds the re-run copies itself, unseen by saved-tensor
        # hooks: the CPU meter is a lower bound here (live, RSS and CUDA peaks are not)
        row["note"] = "recompute: activation meter is a lower bound; see live_peak_bytes"
    step()  # optimizer state exists from here on: measure the steady state
    # every live tensor, temporaries and recomputation included (max_memory_allocated's
    # analogue on any device); it starts from params, buffers, optimizer state, batch
    row["live_peak_bytes"] = live_peak(step, device, [*net.parameters(), *net.buffers(),
                                                      *opt.state_tensors(), x,
                                                      *tree_flatten(y)[0]])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        row["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device) - others
    return row, step


def run_bench(mode: str, spec: BenchSpec) -> List[Dict[str, Any]]:
    """All rows of a bench, each with ``<field>_ratio`` to the E2E row of the same run."""
    check_choice("bench mode", mode, MODES)
    if spec.batch_size < 1:
        raise ConfigError(f"batch-size must be a positive integer, got {spec.batch_size}")
    device = resolve_device(spec.device)
    if device.type == "cuda":
        warm_cuda_libraries(device)  # once, before the first pair reads the other memory
    measured = [measure_pair(spec, m, k) for m, k in spec.pairs()]
    rows = [row for row, _ in measured]
    if mode == "speed":
        times = time_interleaved([step for _, step in measured], device,
                                 spec.warmup, spec.repeats)
        for row, t in zip(rows, times):
            row["step_time_s"] = median(t)
            row["step_times_s"] = t
    del measured
    ref = rows[0]
    for r in rows:
        for f in RATIO_FIELDS:
            if f in r and ref.get(f):
                r[f + "_ratio"] = r[f] / ref[f]
        if "step_time_s" in r:
            # FLOP efficiency: FLOPs per second relative to E2E's
            r["flop_efficiency"] = (r["flops_per_step"] / r["step_time_s"]) / (
                ref["flops_per_step"] / ref["step_time_s"])
    return rows


def environment() -> Dict[str, str]:
    """Machine and versions, written beside every benchmark number."""
    import torchvision

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "machine": platform.machine(),
           "cpu_threads": str(torch.get_num_threads()), "platform": platform.platform()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def format_table(rows: List[Dict[str, Any]]) -> str:
    """A fixed-width table of the main fields and their ratios to E2E."""
    mb = 2.0 ** 20
    cuda = any("cuda_peak_bytes" in r for r in rows)
    speed = any("step_time_s" in r for r in rows)
    head = (f"{'method':16s} {'K':>3s} {'act MB':>8s} {'x':>5s} {'total MB':>9s} {'x':>5s} "
            f"{'live MB':>8s} {'x':>5s} {'GFLOP':>7s} {'x':>5s}")
    head += f" {'CUDA MB':>8s} {'x':>5s}" if cuda else ""
    head += f" {'s/step':>7s} {'x':>5s} {'FLOP eff':>8s}" if speed else ""
    lines = [head, "-" * len(head)]
    for r in rows:
        line = (f"{r['method']:16s} {r['blocks']:>3d} {r['activation_bytes'] / mb:>8.1f} "
                f"{r.get('activation_bytes_ratio', 1):>5.2f} {r['peak_bytes'] / mb:>9.1f} "
                f"{r.get('peak_bytes_ratio', 1):>5.2f} {r['live_peak_bytes'] / mb:>8.1f} "
                f"{r.get('live_peak_bytes_ratio', 1):>5.2f} {r['flops_per_step'] / 1e9:>7.2f} "
                f"{r.get('flops_per_step_ratio', 1):>5.2f}")
        if cuda:
            line += f" {r['cuda_peak_bytes'] / mb:>8.1f} {r.get('cuda_peak_bytes_ratio', 1):>5.2f}"
        if speed:
            line += (f" {r['step_time_s']:>7.3f} {r.get('step_time_s_ratio', 1):>5.2f}"
                     f" {r.get('flop_efficiency', 1):>8.2f}")
        lines.append(line)
    return "\n".join(lines)
