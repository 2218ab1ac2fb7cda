"""The benchmark scripts' bookkeeping: where runs trained, and the GPU steps table."""
import json

MB = 2 ** 20


def test_segments_say_where_each_part_of_a_run_trained(bench_script, tmp_path, monkeypatch):
    import sys

    rep = bench_script("reproduce")
    monkeypatch.setattr(sys.modules["reproduce_plan"], "RESULTS", tmp_path)  # where run_dir keeps
    assert rep.devices_line("plateau") == []  # nothing kept: nothing to say
    assert rep._trained_when("plateau") == ""
    run = rep.run_dir("plateau", "dgl+manpp", 16, 1, kept=True)
    run.mkdir(parents=True)
    gpu = dict(device="cuda", machine="NVIDIA X", torch="2.11", date="2026-11-26")
    (run / rep.SEGMENTS).write_text(json.dumps([
        dict(gpu, from_epoch=0), dict(gpu, from_epoch=4, device="cpu", machine="x86_64 CPU")]))
    cpu_only = rep.run_dir("plateau", "dgl", 16, 1, kept=True)
    cpu_only.mkdir(parents=True)
    (cpu_only / rep.SEGMENTS).write_text(json.dumps([dict(gpu, from_epoch=0, device="cpu")]))
    (line,) = [ln for ln in rep.devices_line("plateau") if ln]
    assert "`dgl+manpp` seed 1: epochs 1-4 on NVIDIA X" in line
    assert "then epochs 5-10 on x86_64 CPU" in line and "`dgl`" not in line
    # a CPU run resumed with two threads is said too; one thread is the default
    cpu = dict(gpu, device="cpu", machine="x86_64 CPU, 1 thread(s)")
    (cpu_only / rep.SEGMENTS).write_text(json.dumps([
        dict(cpu, from_epoch=0), dict(cpu, from_epoch=1, machine="x86_64 CPU, 2 thread(s)")]))
    (line,) = [ln for ln in rep.devices_line("plateau") if ln]
    assert "`dgl` seed 1: epoch 1 on x86_64 CPU, 1 thread(s)" in line
    assert "then epochs 2-10 on x86_64 CPU, 2 thread(s)" in line
    # a finished run restarted with two threads (to recompute its heads) trained nothing
    # there; the same machine's parts read as one
    two = dict(cpu, machine="x86_64 CPU, 2 thread(s)")
    (cpu_only / rep.SEGMENTS).write_text(json.dumps([dict(cpu, from_epoch=0), dict(two, from_epoch=10)]))
    (line,) = [ln for ln in rep.devices_line("plateau") if ln]
    assert "`dgl`" not in line
    (cpu_only / rep.SEGMENTS).write_text(json.dumps([dict(two, from_epoch=0), dict(two, from_epoch=3)]))
    (line,) = [ln for ln in rep.devices_line("plateau") if ln]
    assert "`dgl` seed 1: epochs 1-10 on x86_64 CPU, 2 thread(s) (torch 2.11, 2026-11-26);" in line
    assert rep._trained_when("plateau") == "; the runs trained on 2026-11-26"  # one day
    (cpu_only / rep.SEGMENTS).write_text(json.dumps([dict(two, from_epoch=0, date="2026-12-01")]))
    assert rep._trained_when("plateau") == "; the runs trained from 2026-11-26 to 2026-12-01"


def test_note_segment_appends_the_start_epoch(bench_script, tmp_path):
    rep = bench_script("reproduce")
    rep.note_segment(tmp_path, "cpu")
    rep.note_segment(tmp_path, "cpu")
    segs = json.loads((tmp_path / rep.SEGMENTS).read_text())
    assert [s["from_epoch"] for s in segs] == [0, 0] and segs[0]["device"] == "cpu"


def test_gpu_steps_table_shows_max_memory_allocated(bench_script):
    wb = bench_script("write_benchmarks")
    row = dict(method="e2e", blocks=1, activation_bytes=10 * MB, activation_bytes_ratio=1.0,
               peak_bytes=20 * MB, peak_bytes_ratio=1.0, flops_per_step=2e9,
               flops_per_step_ratio=1.0, step_time_s=0.01, step_time_s_ratio=1.0,
               flop_efficiency=1.0)
    assert "max_memory_allocated" not in wb._steps_table([row])[0]
    table = wb._steps_table([dict(row, cuda_peak_bytes=21 * MB, cuda_peak_bytes_ratio=1.0)])
    assert "max_memory_allocated" in table[0]
    assert table[2] == "| e2e | 1 | 10.0 (1.00) | 20.0 (1.00) | 21.0 (1.00) | 2.0 (1.00) | 0.010 (1.00) | 1.00 |"
    assert table[1].count("|") == table[0].count("|")


def test_fidelity_table_gap_shares_are_per_seed_and_paired(bench_script):
    tab = bench_script("fidelity_table")
    budget = dict(seeds=[0, 1], epochs=2, fidelity=["dgl+manpp@preset=manpp-cifar-dgl"],
                  factors=["dgl+manpp@ema_timing=before-step"])
    by_seed = {"e2e": {0: [80, 90], 1: [80, 92]}, "dgl": {0: [70, 80], 1: [70, 82]},
               "dgl+manpp": {0: [75, 85], 1: [75, 84]},
               "dgl+manpp@preset=manpp-cifar-dgl": {0: [74, 84], 1: [76, 86]}}
    text = "\n".join(tab.fidelity_lines(budget, by_seed))
    # today's: shares 0.5 and 0.2; the preset's: 0.4 and 0.4, paired -1 and +2 points
    assert "| `dgl+manpp` | today's" in text and "| 0.35 +- 0.21 |" in text
    assert "| 0.40 +- 0.00 | +0.50 +- 2.12 (within noise) |" in text
    assert "Reading: DGL+MAN++ minus DGL, paired over 2 seed(s): +3.50 +- 2.12" in text
    assert "(within noise): the papers' lift of DGL is not shown" in text
    assert "ema_timing" not in text  # no finished run: no row
    # what 2 seeds can resolve: the preset's differences (-1, +2) spread by 2.12; with
    # t(0.975) + t(0.8) = 4.303 + 1.061 (df 2) at 3 seeds, 2.262 + 0.883 (df 9) at 10
    assert "spread by 2.12 points (pooled over 1 row(s), 1 degree(s) of freedom)" in text
    assert "about 6.57 points at 3 seeds and 2.11 at 10" in text
    # the shortfall (0.69 - 0.35) x 10 points = 3.40; 6 seeds resolve 3.02, 5 only 3.53
    assert "of a 10.00-point gap: 3.40 points) a test would need 6 seeds." in text
    # the preset's 95% interval at 2 seeds: 0.50 +- 12.706 x 2.12 / sqrt(2) = 19.06
    assert ("`dgl+manpp@preset=manpp-cifar-dgl` minus today's MAN++ over 2 seeds: +0.50 points, "
            "95% interval [-18.56, +19.56]: its interval still holds the 3.40 points") in text
    # a third seed of MAN++ alone (no DGL or E2E there): in its accuracy, not its share
    by_seed["dgl+manpp"][2] = [70, 86]
    text = "\n".join(tab.fidelity_lines(budget, by_seed))
    assert "| `dgl+manpp` | today's defaults (EMA after the step, exact copies, default heads) | 3 | 85.00 +- 1.00 | 0.35 +- 0.21 (2 of the seeds) | - |" in text


def test_fidelity_table_says_when_a_variant_cannot_explain_the_shortfall(bench_script):
    tab = bench_script("fidelity_table")
    budget = dict(seeds=[0, 1, 2], epochs=2, fidelity=["dgl+manpp@preset=manpp-cifar-dgl"])
    by_seed = {"e2e": {s: [80, 90] for s in range(3)}, "dgl": {s: [70, 80] for s in range(3)},
               "dgl+manpp": {s: [75, 84] for s in range(3)},
               "dgl+manpp@preset=manpp-cifar-dgl": {0: [75, 83.9], 1: [75, 84], 2: [75, 84.1]}}
    text = "\n".join(tab.fidelity_lines(budget, by_seed))
    # shortfall (0.69 - 0.40) x 10 = 2.90 points; the preset's differences -0.1, 0, +0.1:
    # 95% interval 0 +- 4.303 x 0.1 / sqrt(3) = 0.25, which ends below 2.90
    assert "of a 10.00-point gap: 2.90 points)" in text
    assert ("over 3 seeds: +0.00 points, 95% interval [-0.25, +0.25]: its interval ends below "
            "the 2.90 points, so it does not explain the shortfall.") in text
    # a preset 3.9-4.1 points above today's on every seed: its whole interval is above
    by_seed["dgl+manpp@preset=manpp-cifar-dgl"] = {0: [75, 87.9], 1: [75, 88], 2: [75, 88.1]}
    assert "its interval lies above the 2.90 points: it explains the shortfall." in \
        "\n".join(tab.fidelity_lines(budget, by_seed))


def test_stopped_runs_table_leaves_out_seeds_finished_since(bench_script, tmp_path):
    tab = bench_script("fidelity_table")
    factor = "dgl+manpp@ema_timing=before-step"
    budget = dict(seeds=[0, 1], epochs=3, fidelity=["dgl+manpp@preset=manpp-cifar-dgl"],
                  factors=[factor])
    by_seed = {"e2e": {0: [80, 90, 92], 1: [80, 92, 94]}, "dgl": {0: [70, 80, 82], 1: [70, 82, 84]},
               "dgl+manpp": {0: [75, 85, 87], 1: [75, 84, 86]}}
    for seed in (0, 1):  # both seeds stopped after epoch 2 in a GPU sitting
        (tmp_path / f"f_s{seed}").mkdir()
        (tmp_path / f"f_s{seed}" / "metrics.csv").write_text(f"epoch,test_acc\n1,0.7\n2,0.8{seed}\n")
    name = lambda method, seed: f"f_s{seed}" if method == factor else "none"
    text = "\n".join(tab.fidelity_lines(budget, by_seed, tmp_path, name))
    assert f"| `{factor}` | 2 of 3 | 0, 1 | 80.50 +- 0.71 |" in text
    # seed 0 finished since on the CPU: only seed 1 is still a stopped run
    text = "\n".join(tab.fidelity_lines(budget, {**by_seed, factor: {0: [71, 81, 88]}},
                                        tmp_path, name))
    assert f"| `{factor}` | 2 of 3 | 1 | 81.00 (one seed) | 84.00 (one seed) | -3.00 (one seed, no test) |" in text
    # and its finished seed is a row of the table, said once to be one seed
    assert f"| `{factor}` | only: EMA moved before the step | 1 | 88.00 (one seed) | 0.60 (one seed) | +1.00 (one seed, no test) |" in text
    text = "\n".join(tab.fidelity_lines(budget, {**by_seed, factor: {0: [1, 2, 88], 1: [1, 2, 3]}},
                                        tmp_path, name))
    assert "stopped before their last epoch" not in text


def test_fidelity_table_compares_each_preset_with_its_own_base(bench_script):
    tab = bench_script("fidelity_table")
    budget = dict(seeds=[0, 1], epochs=1, fidelity=["dgl+manpp@preset=manpp-cifar-dgl"],
                  fidelity_base=["dgl@preset=manpp-cifar-dgl", "infopro@preset=manpp-cifar-infopro"],
                  fidelity_infopro=["infopro+manpp@preset=manpp-cifar-infopro"])
    by_seed = {"e2e": {0: [90], 1: [90]}, "dgl": {0: [80], 1: [80]},
               "dgl+manpp": {0: [85], 1: [85]}, "infopro": {0: [70], 1: [70]},
               "infopro+manpp": {0: [72], 1: [72]},
               "dgl@preset=manpp-cifar-dgl": {0: [81], 1: [79]},
               "infopro@preset=manpp-cifar-infopro": {0: [66], 1: [68]},
               "infopro+manpp@preset=manpp-cifar-infopro": {0: [78], 1: [79]}}
    lines = tab.fidelity_lines(budget, by_seed)
    # the DGL preset's MAN++ has no finished run: its base is shown, no share against it
    assert any(s.startswith("DGL under the same preset (`dgl@preset=manpp-cifar-dgl`: heads "
                            "redrawn") and "80.00 +- 1.41 %" in s and "+0.00 +- 1.41" in s
               for s in lines)
    assert not any("preset's DGL+MAN++" in s for s in lines)
    # InfoPro's: base 66 / 68 (-4 / -2 vs today's), shares (78-66)/(90-66) and (79-68)/(90-68)
    assert any(s.startswith("InfoPro under the same preset") and "2c2f CE heads" in s
               and "67.00 +- 1.41 %" in s and "-3.00 +- 1.41 points" in s for s in lines)
    # lifts +12 / +11 over the preset's base: a paired t-test rejects zero
    assert "Gap share of the preset's InfoPro+MAN++ against the preset's own InfoPro: " \
           "0.50 +- 0.00; minus it +11.50 +- 0.71 points (higher)." in lines
    # the preset's heads with today's bridge, against the same preset base: 70 / 68 ->
    # lifts +4 / 0, shares 4/24 and 0/22
    heads_only = "infopro+manpp@preset=manpp-cifar-infopro,ema_timing=after-step,bridge_init=copy"
    lines = tab.fidelity_lines(dict(budget, fidelity_infopro=[heads_only]),
                               {**by_seed, heads_only: {0: [70], 1: [68]}})
    (line,) = [s for s in lines if s.startswith(f"`{heads_only}` (the reference preset's heads")]
    assert "gap share against the preset's own InfoPro 0.08 +- 0.12" in line
    assert "minus it +2.00 +- 2.83 points (within noise)" in line
    assert any(s.startswith(f"| `{heads_only}` | the reference preset's heads with today's")
               for s in lines)  # and its row in the table, against today's MAN++


def test_a_variant_sets_fields_back_over_its_preset(bench_script, tmp_path):
    rep = bench_script("reproduce")
    plan = bench_script("reproduce_plan")
    # one option as before (a float field, a head option, a preset, the per-channel LB)
    assert plan.split_variant("dgl+manpp@ema_momentum=0.81") == ("dgl+manpp", {"ema_momentum": 0.81}, {})
    assert plan.split_variant("infopro+manpp@decoder=conv_first")[2] == {"decoder": "conv_first"}
    assert plan.split_variant("dgl+manpp@channel")[1] == {"lb": "channel"}
    assert rep.run_dir("short", "dgl+manpp@ema_momentum=0.81", 16, 0).name == \
        "dgl_manpp_ema_momentum_0.81_K16_s0"  # the names of kept runs do not change
    method = plan.HEADS_ONLY
    # a preset's own base is a method without a bridge; the variant is a MAN++ row
    for b in plan.BUDGETS.values():
        assert all("+" not in m.partition("@")[0] for m in b.get("fidelity_base", [])), b
    assert method in plan.BUDGETS["short"]["fidelity_infopro"]
    assert plan.split_variant(method) == ("infopro+manpp", {
        "preset": "manpp-cifar-infopro", "ema_timing": "after-step", "bridge_init": "copy"}, {})
    assert rep.run_dir("short", method, 16, 2).name == ("infopro_manpp_preset_manpp-cifar-infopro"
                                                        "_ema_timing_after-step_bridge_init_copy_K16_s2")
    cfg, said = rep.train_config(rep.BUDGETS["short"], method, 16, 2, "cpu", tmp_path)
    # the preset's heads and head init; today's bridge; the budget's recipe
    assert (cfg.ema_timing, cfg.bridge_init, cfg.head_init) == ("after-step", "copy", "reference")
    assert cfg.head_opts["loss"] == "ce" and cfg.head_overrides["0"]["loss"] == "supcon"
    assert (cfg.batch_size, cfg.lr, cfg.epochs, cfg.seed) == (128, 0.1, 3, 2)
    assert any("kept as given" in s and "ema_timing=after-step" in s for s in said)
    full, _ = rep.train_config(rep.BUDGETS["short"], "infopro+manpp@preset=manpp-cifar-infopro",
                               16, 2, "cpu", tmp_path)
    assert (full.ema_timing, full.bridge_init) == ("before-step", "reference")


def test_gpu_scripts_refuse_a_machine_without_cuda(tmp_path):
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for script in ("gpu_fidelity.sh", "gpu_checks.sh"):
        res = subprocess.run(["bash", str(root / "benchmarks" / script), str(tmp_path / script)],
                             capture_output=True, text=True, timeout=120,
                             env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""})
        assert res.returncode == 2 and "sees no CUDA GPU" in res.stderr, res.stderr


FAKE_PYTHON = """#!/bin/bash
echo "$*" >> "$CALLS"
case "$*" in
  *" train "*|*"--budget plateau --device"*) echo $$ >> "$PIDS"; exec sleep 300;;
esac
exit 0
"""
FAKE_SMI = """#!/bin/bash
case "$*" in *" -l "*) echo $$ >> "$PIDS"; exec sleep 300;; esac
echo fake-gpu
"""


def test_gpu_bench_runs_several_benches_and_stops_them(tmp_path):
    """A fake GPU machine (python3 and nvidia-smi stand-ins): one pool per bench, the
    workers split between them, every pool stopped at the deadline, then each table and
    the results archive."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = str(root / "benchmarks" / "gpu_bench.sh")
    env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run(["bash", script, str(tmp_path / "a"), "detection,segmentation"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2 and "unknown bench 'segmentation'" in res.stderr
    assert "allowed: detection, sr, analysis, fidelity" in res.stderr
    res = subprocess.run(["bash", script, str(tmp_path / "b"), "detection"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2 and "sees no CUDA GPU" in res.stderr
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, text in (("python3", FAKE_PYTHON), ("nvidia-smi", FAKE_SMI)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    calls = tmp_path / "calls.log"
    out = tmp_path / "out"
    res = subprocess.run(["bash", script, str(out), "detection,fidelity", "62", "6"],
                         capture_output=True, text=True, timeout=120,
                         env={**env, "PATH": f"{fake}:/usr/bin:/bin", "CALLS": str(calls),
                              "PIDS": str(tmp_path / "pids")})
    assert res.returncode == 0, res.stderr
    ran = calls.read_text().splitlines()
    assert "benchmarks/bench_detection.py train --device cuda --workers 3" in ran
    assert "benchmarks/reproduce.py --budget plateau --device cuda --workers 3" in ran
    assert "benchmarks/bench_detection.py table" in ran
    assert "benchmarks/reproduce.py --budget plateau --table-only" in ran
    log = (out / "log.txt").read_text()
    assert "stopping the trainers" in log and (out / "results.tgz").stat().st_size > 0
    import os
    import time

    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 3  # two trainers and the utilisation log

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return "sleep" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")

    deadline = time.time() + 10  # a signalled process ends asynchronously
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)]  # nothing outlived the sitting


def test_detection_claim_and_heads_tables(bench_script, tmp_path, monkeypatch):
    tab = bench_script("detection_table")
    monkeypatch.setattr(tab, "run_dirs", lambda f, m, s: (None, tmp_path / f"{f}_{m}_{s}"))
    monkeypatch.setattr(tab, "STEPS_JSON", tmp_path / "steps.json")
    monkeypatch.setattr(tab, "MEMORY_JSON", tmp_path / "memory.json")
    maps = {"e2e": [0.30, 0.32, 0.31], "slm": [0.29, 0.33, 0.30], "greedy+manpp": [0.25, 0.26, 0.25]}
    for method, vals in maps.items():
        for seed, v in enumerate(vals):
            d = tmp_path / f"retinanet_{method}_{seed}"
            d.mkdir()
            (d / "summary.json").write_text(json.dumps(dict(epochs=8, final_test_map=v)))
    (tmp_path / "retinanet_slm_0" / "heads.json").write_text(json.dumps(
        [{"test_map": v} for v in (0.35, 0.33, 0.31, 0.29)]))
    (tmp_path / "steps.json").write_text(json.dumps(dict(rows={
        "retinanet/slm": dict(peak_bytes_ratio=1.3), "retinanet/greedy+manpp": dict(peak_bytes_ratio=0.9)})))
    text = "\n".join(tab.claim_lines())
    # slm: -1, +1, -1 points (within noise); greedy+manpp: -5, -6, -6 (lower)
    assert "| retinanet | slm | 3 | -1.00, +1.00, -1.00 | -0.33 +- 1.15 | within noise | 1.30 |" in text
    assert "| retinanet | greedy+manpp | 3 | -5.00, -6.00, -6.00 | -5.67 +- 0.58 | lower | 0.90 |" in text
    assert "1 of 2 local rows with all 3 seeds reach E2E" in text
    assert "1 of 2 local rows step in less memory than E2E (0.90-1.30x)" in text
    heads = "\n".join(tab.heads_lines())
    assert "| retinanet | slm | 1 | 35.00 | 33.00 | 31.00 | 29.00 | b0: +5.00 |" in heads


def test_kept_heads_are_computed_once_in_each_bench_layout(bench_script, tmp_path):
    """One writer of heads.json for every bench: the rows of ``eval --heads`` (detection),
    or the layout a bench's table reads (reproduce: columns), from a finished run's checkpoint."""
    from locallearn import TrainConfig, fit

    kr, rep = bench_script("kept_runs"), bench_script("reproduce")
    out, kept = tmp_path / "run", tmp_path / "kept"
    assert kr.keep_heads(out, kept) is None  # nothing trained or kept yet
    fit(TrainConfig(model="resnet20", method="dgl+manpp", blocks=2, dataset="synthetic",
                    epochs=1, batch_size=16, limit_train=32, limit_test=16, device="cpu",
                    out=str(out)), progress=False)
    assert kr.keep_heads(out, kept) is None  # trained, but not kept as finished
    kept.mkdir()
    (kept / "summary.json").write_text((out / "summary.json").read_text())
    rows = kr.keep_heads(out, kept)
    assert [r["block"] for r in rows] == [0, 1] and 0 <= rows[1]["test_acc"] <= 1
    assert rows[0]["bridge_scale"] is not None and rows[1]["bridge_scale"] is None
    assert json.loads((kept / "heads.json").read_text()) == rows
    acc = json.loads((out / "summary.json").read_text())["final_test_acc"]
    assert abs(rows[1]["test_acc"] - acc) < 1e-6  # the last block's head is the network
    rep.layerwise(out, kept, "cpu")  # replaces the rows with reproduce's columns
    cols = json.loads((kept / "heads.json").read_text())
    assert cols["test_acc"] == [r["test_acc"] for r in rows]
    assert cols["bridge_scale"] == [rows[0]["bridge_scale"]] and len(cols["ema_lag"]) == 1
    (kept / "heads.json").write_text('{"kept": 1}')
    assert kr.keep_heads(out, kept) == {"kept": 1}  # computed once: a kept file is read back
    # the tables' one reader: the kept file of each run that has one, under its seed
    assert kr.read_heads({0: kept, 1: tmp_path / "no-run", 2: out}) == {0: {"kept": 1}}


def test_sr_heads_keep_their_psnr_layout(bench_script, tmp_path, monkeypatch):
    """bench_sr's heads.json through the shared writer: one row per block with its PSNR,
    the last the network's own (as the run's summary says)."""
    from test_sr_cli import _train
    from test_sr_data import write_png

    root = tmp_path / "sr"
    for i in range(2):
        write_png(root / "train" / f"t{i}.png", 40, 36, seed=i)
    write_png(root / "test" / "a.png", 40, 40, seed=7)
    write_png(root / "test" / "b.png", 36, 44, seed=8)  # another size: one image at a time
    out, kept = tmp_path / "run", tmp_path / "kept"
    assert _train(str(root), out, "slm+manpp", 3) == 0
    kept.mkdir()
    (kept / "summary.json").write_text((out / "summary.json").read_text())
    sr = bench_script("bench_sr")
    monkeypatch.setattr(sr, "run_dirs", lambda *job: (out, kept))
    rows = sr.head_scores(2, "slm+manpp", 3, 0)
    assert [(r["block"], set(r)) for r in rows] == [(j, {"block", "units", "psnr"}) for j in range(3)]
    summary = json.loads((out / "summary.json").read_text())
    assert abs(rows[-1]["psnr"] - summary["final_test_psnr"]) < 1e-4
    assert json.loads((kept / "heads.json").read_text()) == rows


def test_a_stopped_benchmark_run_is_one_line_and_its_exit_code(bench_script, capsys):
    """SIGTERM to a bench's trainers: the run checkpointed, so the worker says so in one
    line and exits 128 + signal, with no traceback; other errors still raise."""
    import pytest

    from locallearn.stop import Stopped

    kr = bench_script("kept_runs")

    def stopped() -> None:
        raise Stopped(15, "stopped by SIGTERM; checkpoint at epoch 2 batch 156 in runs/x")

    assert kr.stoppable(stopped) == 143
    assert capsys.readouterr().out == "== stopped by SIGTERM; checkpoint at epoch 2 batch 156 in runs/x\n"
    assert kr.stoppable(lambda: None) == 0

    def broken() -> None:
        raise ValueError("not a stop")

    with pytest.raises(ValueError, match="not a stop"):
        kr.stoppable(broken)


def test_gap_share_is_per_seed_with_its_spread(bench_script):
    tab = bench_script("fidelity_table")
    by_seed = {"e2e": {0: [90.0, 93.0], 1: [96.0]}, "dgl": {0: [91.0], 1: [92.0]},
               "dgl+manpp": {0: [92.0], 1: [93.0]}}
    (line,) = [ln for ln in tab.share_lines(by_seed) if ln]
    # seed 0: 1/2, seed 1: 1/4; the share of the means (92.5 - 91.5) / (94.5 - 91.5) differs
    assert "seed by seed: 0.38 +- 0.18 (seeds 0, 1; of the means over all finished seeds: 0.33;" in line
    del by_seed["dgl+manpp"][1]
    assert "seed by seed: 0.50 (seed 0; papers" in tab.share_lines(by_seed)[1]
    assert tab.share_lines({"e2e": {0: [93.0]}, "dgl": {0: [91.0]}}) == []


def test_seeds_plot_draws_one_row_per_method(bench_script, tmp_path):
    sec = bench_script("reproduce_sections")
    assert (sec.n_seeds(1), sec.n_seeds(3)) == ("1 seed", "3 seeds")
    path = tmp_path / "s.png"
    sec.seeds_plot({"e2e": {0: 93.0, 1: 93.2}, "dgl": {0: 91.0}}, "t", path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
