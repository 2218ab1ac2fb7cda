"""The PPLL section of BENCHMARKS.md (results/section_pipeline.md) from bench_pipeline.py's
json files, with the cost model's predictions computed here from the measured block
times. Types no number by hand."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from bench_pipeline import ACC_LIMIT, ACCURACY, BATCH, CONFIGS, LIMIT, METHOD, MODEL, OUT, SEEDS, TABLE_VIII
from bench_segmentation import _stat
from locallearn.checkpoint import atomic_write_text
from locallearn.measure.pipeline_cost import LinkSpeed, StepCosts, predict
from locallearn.parallel.stage import assign_blocks

RESULTS = OUT.parent


def _made(d: Dict[str, Any]) -> str:
    """Where and when a json of bench_pipeline.py was made."""
    env = d["environment"]
    return f"{env['machine']} (2 cores), torch {env['torch']}, {d['date']}"


def _costs(row: Dict[str, Any]) -> StepCosts:
    return StepCosts(block_s=row["block_s"], message_bytes=row["message_bytes"],
                     local_param_bytes=row["local_param_bytes"], e2e_s=row["e2e_s"],
                     e2e_param_bytes=row["e2e_param_bytes"])


def _predicted_s(name: str, costs: Dict[str, Any], link: LinkSpeed) -> Optional[float]:
    """The model's seconds per epoch for one configuration of CONFIGS."""
    procs, method, k, extra = CONFIGS[name]
    steps = LIMIT // BATCH
    key = f"K={8 if k == 1 else k} {'time' if 'time' in extra else 'equal'}"
    blocks = costs["blocks"].get(key)
    if blocks is None:
        return None
    one, shard, two = (_costs(blocks[f"{t}t_b{b}"]) for t, b in
                       ((1, BATCH), (1, BATCH // 2), (2, BATCH)))
    if procs == 1:  # one process on both cores: its own step, measured at 2 threads
        return steps * (two.e2e_s if method == "e2e" else sum(two.block_s))
    p = predict(one, shard, 2, steps, link, groups=assign_blocks(len(one.block_s), 2))
    if "--ddp" in extra:
        return p["e2e_ddp_s"] if method == "e2e" else p["local_ddp_s"]
    if "lockstep" in extra:  # one batch in the pipe: the stages never overlap
        return steps * sum(p["stage_s"])
    return p["ppll_s"]


def throughput_lines() -> List[str]:
    tp, costs = json.loads((OUT / "throughput.json").read_text()), \
        json.loads((OUT / "costs.json").read_text())
    link = LinkSpeed(**costs["link"])
    env = tp["environment"]
    base = tp["rows"]["E2E, 1 process x 2 threads"]["images_per_s"]
    lines = [
        "### Throughput on this machine", "",
        f"`{MODEL}` `{METHOD}` on Fashion-MNIST, batch {BATCH}, {LIMIT} training images per "
        f"epoch, images/s of the median epoch after the first (of {tp['epochs']}). "
        f"Machine: {env['machine']}, 2 cores, CPU only; torch {env['torch']}; {tp['date']}. "
        "Command: `.venv/bin/python benchmarks/bench_pipeline.py throughput` (then `costs`, "
        "`table`); each row runs the CLI, e.g. `torchrun --nproc-per-node 2 -m locallearn "
        "train ... --pipeline`.  ",
        "Predicted: the cost model (`locallearn.measure.pipeline_cost.predict`) fed with each "
        "block's step time measured in one process (1 thread at batch 128 and at the DDP "
        "shard 64; 2 threads for the single-process rows) and the gloo link measured here "
        f"({1e6 * link.latency_s:.0f} us per message, {link.bytes_per_s / 1e9:.2f} GB/s).", "",
        "| configuration | images/s | x E2E (1 process) | predicted images/s | predicted / measured |",
        "|---|---|---|---|---|"]
    for name in CONFIGS:
        row = tp["rows"].get(name)
        if row is None:
            continue
        pred = _predicted_s(name, costs, link)
        p_ips = f"{LIMIT / pred:.0f}" if pred else "-"
        ratio = f"{row['epoch_s'] / pred:.2f}" if pred else "-"
        lines.append(f"| {name} | {row['images_per_s']:.0f} | {row['images_per_s'] / base:.2f} "
                     f"| {p_ips} | {ratio} |")
    rows = tp["rows"]
    pbytes = costs["blocks"]["K=2 equal"][f"1t_b{BATCH // 2}"]["local_param_bytes"]

    def ips(name: str) -> float:
        return rows[name]["images_per_s"] if name in rows else float("nan")

    lines += ["", "Verdict on this machine: PPLL K=2 runs at "
              f"{ips('PPLL K=2, 2 x 1 (stream)') / ips('local K=2 DDP, 2 x 1'):.2f}x the "
              f"images/s of local DDP and {ips('PPLL K=2, 2 x 1 (stream)') / ips('local K=2, 1 process x 2 threads'):.2f}x "
              "single-process local training; K=8 on 2 ranks "
              f"{ips('PPLL K=8 on 2 ranks (stream)') / ips('local K=8 DDP, 2 x 1'):.2f}x local DDP. "
              "Streaming is "
              f"{ips('PPLL K=2, 2 x 1 (stream)') / ips('PPLL K=2, 2 x 1 (lockstep)'):.2f}x lock-step: the "
              "ranks do overlap. PPLL does not beat DDP here because the pipeline runs at its "
              "slowest stage (below: ResNet-32's first block with its InfoPro decoder at full "
              "resolution costs twice the rest at K=2), while DDP on two CPU processes pays "
              f"little for its all-reduce ({pbytes / 2 ** 20:.1f} MiB of trainable weights at "
              f"{link.bytes_per_s / 1e9:.2f} GB/s) and loses little to half batches. The model's "
              "ResNet-101 rows below show what the same arithmetic predicts at the paper's "
              "shapes. The cost model's error per row is the last column (predicted / "
              "measured seconds).",
              "", "Stages of the pipeline rows (the model's seconds per step, each stage's "
              "blocks plus sending its output; the slowest sets the pace):", ""]
    for key in costs["blocks"]:
        blocks = costs["blocks"][key]
        one = _costs(blocks[f"1t_b{BATCH}"])
        k = len(one.block_s)
        p = predict(one, _costs(blocks[f"1t_b{BATCH // 2}"]), 2, LIMIT // BATCH, link,
                    groups=assign_blocks(k, 2))
        best = predict(one, _costs(blocks[f"1t_b{BATCH // 2}"]), 2, LIMIT // BATCH, link)
        lines.append(f"- {key}: blocks {p['groups']} -> stages "
                     f"{', '.join(f'{s:.3f}' for s in p['stage_s'])} s, bottleneck stage "
                     f"{p['bottleneck_stage']}; grouped by time instead {best['groups']} -> "
                     f"{', '.join(f'{s:.3f}' for s in best['stage_s'])} s")
    return lines


def accuracy_lines() -> List[str]:
    lines = ["", "### Streaming vs lock-step: accuracy", "",
             f"`{MODEL}` `{METHOD}` K=4 on 2 ranks, Fashion-MNIST {ACC_LIMIT} / 2000, 3 epochs, "
             "batch 128, seeds 0-2. Lock-step is exactly single-process training (a test "
             "checks it to 1e-6); streaming lets rank 0 run up to 2 batches ahead, so the "
             "EMA copy of bridge 1 tracks the next rank's unit as it was 2 steps earlier "
             "(and up to 7 steps more with `--ema-sync-every 8`). "
             + (f"Made on {_made(json.loads((OUT / 'accuracy.json').read_text()))}. "
                if (OUT / "accuracy.json").is_file() else "") + "Command: "
             "`.venv/bin/python benchmarks/bench_pipeline.py accuracy`.", "",
             "| mode | seeds | test acc % | per seed |", "|---|---|---|---|"]
    for name in ACCURACY:
        accs = []
        for seed in SEEDS:
            p = OUT / "accuracy" / f"{name.replace(' ', '_').replace(',', '')}_s{seed}" / \
                "summary.json"
            if p.is_file():
                accs.append(json.loads(p.read_text())["final_test_acc"])
        lines.append(f"| {name} | {len(accs)} | {_stat(accs)} | "
                     f"{', '.join(f'{100 * a:.2f}' for a in accs)} |")
    return lines


def paper_lines() -> List[str]:
    p = OUT / "paper.json"
    if not p.is_file():
        return ["", "### At ResNet-101 ImageNet shapes: not measured yet "
                "(`bench_pipeline.py paper`)"]
    res = json.loads(p.read_text())
    lines = ["", "### The model at ResNet-101 ImageNet shapes, beside the paper's Table VIII", "",
             "`tv:resnet101` `infopro+manpp` at 224x224: each block's step time measured on "
             f"this CPU ({_made(res)}; `bench_pipeline.py paper`) at batch 16 and at the per-device shards, fed to the "
             "model with a free link (an NVLink-class link is far faster than these steps); "
             "seconds per epoch in ratios to E2E under DDP, since CPU seconds are not A100 "
             f"seconds. Paper (4 A100s): PPLL {TABLE_VIII['ppll']} s, E2E DDP "
             f"{TABLE_VIII['e2e_ddp']} s, MAN++ DDP {TABLE_VIII['local_ddp']} s.", "",
             "| K, split | devices | PPLL / E2E DDP | local DDP / E2E DDP | bottleneck stage "
             "| paper PPLL / E2E DDP | paper local DDP / E2E DDP |", "|---|---|---|---|---|---|---|"]
    free = LinkSpeed(latency_s=0.0, bytes_per_s=float("inf"))
    paper = (f"{TABLE_VIII['ppll'] / TABLE_VIII['e2e_ddp']:.2f}",
             f"{TABLE_VIII['local_ddp'] / TABLE_VIII['e2e_ddp']:.2f}")
    best = float("inf")
    for key, row in res.items():
        if not key.startswith("K="):
            continue
        full = _costs(row["b16"])
        k = len(full.block_s)
        for n, shard in ((4, "b4"), (8, "b2")):
            if n > k:
                continue
            pr = predict(full, _costs(row[shard]), n, 1000, free)
            ref = paper if n == 4 else ("-", "-")
            best = min(best, pr["ppll_s"] / pr["e2e_ddp_s"]) if n == 4 else best
            lines.append(f"| {key} | {n} | {pr['ppll_s'] / pr['e2e_ddp_s']:.2f} | "
                         f"{pr['local_ddp_s'] / pr['e2e_ddp_s']:.2f} | {pr['bottleneck_stage']} "
                         f"| {ref[0]} | {ref[1]} |")
    lines += ["", f"Verdict: fed with CPU block times, the model does not reproduce the paper's "
              f"ordering: its best PPLL on 4 devices is {best:.2f}x E2E DDP (paper "
              f"{paper[0]}). On a CPU a quarter batch costs a quarter of the time, so DDP "
              "loses nothing to small shards, while PPLL pays the local heads' extra compute "
              "and any imbalance between stages (a stage split puts ResNet-101's 23-block "
              "layer3 in one stage). The paper's regime needs the GPU's step times, whose "
              "efficiency drops at small per-device batches; `bench_pipeline.py costs` / "
              "`paper` on a GPU would feed them (no GPU was lent to this session)."]
    return lines


def faults_lines() -> List[str]:
    p = OUT / "faults.json"
    if not p.is_file():
        return []
    f = json.loads(p.read_text())
    return ["", "### Faults", "",
            f"Rank 1 of 2 killed (SIGKILL) mid-epoch ({_made(f)}): rank 0 exited with code "
            f"{f['rank0_exit']} after {f['seconds']:.1f} s, printing: `{f['message']}`; the "
            f"last checkpoint loads ({f['checkpoint_entries']} tensors). Command: "
            "`.venv/bin/python benchmarks/bench_pipeline.py faults`."]


def write_section() -> None:
    lines = ["## PPLL: pipeline-parallel local learning (issue 17)", "",
             *throughput_lines(), *accuracy_lines(), *paper_lines(), *faults_lines(), ""]
    atomic_write_text(RESULTS / "section_pipeline.md", "\n".join(lines))
