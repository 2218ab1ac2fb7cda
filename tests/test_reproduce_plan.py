"""benchmarks/reproduce.py's plan: budgets, --only, and the progress of unfinished runs."""
import json


def test_only_splits_methods_whose_variants_hold_commas(bench_script):
    plan = bench_script("reproduce_plan")
    assert plan.method_list(f"{plan.HEADS_ONLY},dgl,dgl+manpp@ema_momentum=0.81,e2e") == [
        plan.HEADS_ONLY, "dgl", "dgl+manpp@ema_momentum=0.81", "e2e"]
    assert plan.method_list("dgl") == ["dgl"]


def test_reproduce_refuses_an_unknown_only_method():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce.py"
    res = subprocess.run([sys.executable, str(script), "--budget", "short", "--only", "dgl,dgl+foo"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--only dgl+foo: not a method of budget short" in res.stderr
    assert "infopro+manpp@preset=manpp-cifar-infopro," in res.stderr and "Traceback" not in res.stderr


def test_every_budget_plans_only_its_own_methods(bench_script, tmp_path):
    rep, plan = bench_script("reproduce"), bench_script("reproduce_plan")
    for name, b in plan.BUDGETS.items():
        for group in plan.GROUPS:  # each named group trains methods the budget tables
            assert set(b.get(group, [])) <= set(b["methods"]), (name, group)
        assert b["issues"]  # the section header says which issues the budget serves
        for method in b["methods"]:  # and every one of them makes a valid TrainConfig
            cfg, _ = rep.train_config(b, method, b["ks"][0], b["seeds"][0], "cpu", tmp_path)
            assert cfg.epochs == b["epochs"] and cfg.method == method.partition("@")[0]
    assert {(n, g) for n, g, _ in plan.PLAN} <= {(n, g) for n in plan.BUDGETS for g in (*plan.GROUPS, "rest")}
    assert plan.BUDGETS["long30"]["epochs"] == 30  # issue 15's longer schedule on the CPU
    jobs = plan.jobs("long30")
    assert jobs[:3] == [("long30", m, 16, 0) for m in ("e2e", "dgl", "dgl+manpp")]
    assert len(jobs) == 15 and len(set(jobs)) == 15


def test_unfinished_runs_say_where_they_stand(bench_script, tmp_path, monkeypatch):
    import sys

    rep = bench_script("reproduce")
    plan = sys.modules["reproduce_plan"]
    monkeypatch.setattr(plan, "RESULTS", tmp_path / "kept")
    monkeypatch.setattr(plan, "ROOT", tmp_path)
    assert rep.training_lines("long30") == []
    header = "epoch,train_loss,test_acc,lr,seconds\n"
    for method, seed, accs in (("e2e", 0, [0.9, 0.9213]), ("dgl", 2, [0.8])):
        out = rep.run_dir("long30", method, 16, seed)
        out.mkdir(parents=True)
        (out / "metrics.csv").write_text(header + "".join(
            f"{i + 1},0.3,{a},0.1,160\n" for i, a in enumerate(accs)))
    (line,) = [ln for ln in rep.training_lines("long30") if ln]
    assert ("`e2e` seed 0: epoch 2 of 30, 92.13%, ~1.2 h left at its last epoch's pace; "
            "`dgl` seed 2: epoch 1 of 30, 80.00%, ~1.3 h left") in line
    kept = rep.run_dir("long30", "e2e", 16, 0, kept=True)  # finished and kept: not said
    kept.mkdir(parents=True)
    (kept / "summary.json").write_text(json.dumps(dict(epochs=30)))
    (line,) = [ln for ln in rep.training_lines("long30") if ln]
    assert "`e2e`" not in line and "`dgl` seed 2" in line


def test_unfinished_runs_compare_at_the_same_epoch_and_plot_dashed(bench_script, tmp_path, monkeypatch):
    import sys

    rep = bench_script("reproduce")
    plan, sections = sys.modules["reproduce_plan"], sys.modules["reproduce_sections"]
    monkeypatch.setattr(plan, "RESULTS", tmp_path / "kept")
    monkeypatch.setattr(plan, "ROOT", tmp_path)
    out = rep.run_dir("long30", "dgl+manpp", 16, 1)
    out.mkdir(parents=True)
    (out / "metrics.csv").write_text("epoch,train_loss,test_acc,lr,seconds\n"
                                     "1,0.5,0.81,0.1,9\n2,0.4,0.8525,0.1,900\n")
    finished_runs = {"dgl": {1: [79.0, 84.5, 90.0], 0: [70.0, 71.0, 91.0]}, "e2e": {1: [88.0]}}
    (line,) = [ln for ln in rep.training_lines("long30", finished_runs) if ln]
    # seed 1's DGL at epoch 2 only: seed 0 is another seed, E2E seed 1 has no epoch 2
    assert ("`dgl+manpp` seed 1: epoch 2 of 30, 85.25% (seed 1's finished runs at epoch 2: "
            "dgl 84.50), ~7.0 h left") in line
    series = rep.training_series("long30")
    assert series == {"dgl+manpp K=16 seed 1 (training, 2 of 30 epochs)": ([1, 2], [81.0, 85.25])}
    axes, subplots = [], sections.plt.subplots

    def keep_axes(**kw):  # the real figure, its axes kept to read the lines drawn
        fig, ax = subplots(**kw)
        axes.append(ax)
        return fig, ax

    monkeypatch.setattr(sections.plt, "subplots", keep_axes)
    sections.line_plot({"dgl (1 seed)": ([1], [79.0]), **series}, "epoch", "acc", "t",
                       tmp_path / "p.png", dashed=series)
    assert [(ln.get_label().split(" ")[0], ln.get_linestyle()) for ln in axes[0].get_lines()] == [
        ("dgl", "-"), ("dgl+manpp", "--")]
    assert (tmp_path / "p.png").stat().st_size > 0


def test_more_seeds_for_the_preset_against_todays_manpp(bench_script):
    rep, plan = bench_script("reproduce"), bench_script("reproduce_plan")
    more = [j for j in plan.jobs("plateau") if j[3] >= 3]
    assert {j[1] for j in more} == {"dgl+manpp", "dgl+manpp@preset=manpp-cifar-dgl"}
    assert sorted({j[3] for j in more}) == list(range(3, 11))
    assert rep.seeds_text("plateau") == ("seeds [0, 1, 2]; seeds 3-10 too for `dgl+manpp` and "
                                         "`dgl+manpp@preset=manpp-cifar-dgl`")
    assert rep.seeds_text("short") == "seeds [0, 1, 2]"
