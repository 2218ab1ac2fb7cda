"""benchmarks/trust_cases.py: its verdicts can fail and pass (judged on made-up outcomes)."""
import json


def _outcome(tc, tmp_path, rc=2, stderr="locallearn: error: bad thing\n", stdout="", hang=False, **kw):
    # Outcome lives in trust_checks; trust_cases imports it (and loading it puts
    # benchmarks/ on the path, so the import below finds trust_checks)
    from trust_checks import Outcome

    return Outcome(rc=rc, stdout=stdout, stderr=stderr, hang=hang, w=tmp_path, f=tmp_path, **kw)


def _case(tc, case_id):
    (case,) = [c for c in tc.CASES if c.id == case_id]
    return case


def test_user_mistake_needs_exit_2_one_line_and_no_traceback(bench_script, tmp_path):
    tc = bench_script("trust_cases")
    from trust_checks import user_mistake

    assert user_mistake(_outcome(tc, tmp_path)) is None
    usage = "usage: locallearn train [-h] [--model MODEL]\n           [--out OUT]\nlocallearn train: error: x\n"
    assert user_mistake(_outcome(tc, tmp_path, stderr=usage)) is None  # argparse's usage aside
    tb = "Traceback (most recent call last):\n  File \"x.py\", line 1\nIndexError: list index out of range\n"
    assert "traceback" in user_mistake(_outcome(tc, tmp_path, rc=1, stderr=tb))
    assert "exit 0" in user_mistake(_outcome(tc, tmp_path, rc=0, stderr=""))
    two = "locallearn: error: a\nlocallearn: error: b\n"
    assert "2 lines" in user_mistake(_outcome(tc, tmp_path, stderr=two))
    assert user_mistake(_outcome(tc, tmp_path, rc=None, hang=True)) == "hang"


def test_export_onto_a_file_is_bad_when_the_file_changed(bench_script, tmp_path):
    tc = bench_script("trust_cases")
    case = _case(tc, "export-onto-file")
    for prep in case.prep:
        prep(tmp_path, tmp_path)
    refused = _outcome(tc, tmp_path, stderr="locallearn: error: m.safetensors exists; pass --force\n")
    assert case.check(refused) is None
    (tmp_path / "m.safetensors").write_bytes(b"new weights")  # what an overwrite does
    assert "changed" in case.check(refused)
    assert "changed" in case.check(_outcome(tc, tmp_path, rc=0, stderr=""))


def test_api_case_wants_a_value_error_naming_the_argument(bench_script, tmp_path):
    tc = bench_script("trust_cases")
    case = _case(tc, "api-step-label-range")
    good = dict(type="ConfigError", mro=["ConfigError", "ValueError", "Exception"],
                msg="y holds label 13 but the model has 4 classes")
    assert case.check(_outcome(tc, tmp_path, rc=1, exc=good)) is None
    deep = dict(type="IndexError", mro=["IndexError", "LookupError", "Exception"],
                msg="Target 13 is out of bounds.")
    assert "IndexError" in case.check(_outcome(tc, tmp_path, rc=1, exc=deep))
    vague = dict(good, msg="bad input")
    assert "does not name" in case.check(_outcome(tc, tmp_path, rc=1, exc=vague))
    assert "NaN" in case.check(_outcome(tc, tmp_path, rc=0, stdout="tensor([nan, nan])"))


def test_cases_cover_every_class_and_compare_counts(bench_script, tmp_path):
    tc = bench_script("trust_cases")
    ids = [c.id for c in tc.CASES]
    assert len(ids) == len(set(ids)) and not any("," in i for i in ids)
    assert {c.cls for c in tc.CASES} == {1, 2, 3, 4, 5, 6}
    env = dict(git="abc", machine="x86_64", torch="2.x", date="today")
    row = dict(id="a", cls=3, cmd="locallearn x | y", rc=1, hang=False, line="Boom", verdict="bad", why="traceback")
    before = dict(env=env, tiny="--tiny", cases=[row])
    after = dict(before, cases=[dict(row, rc=2, verdict="ok", why="", line="locallearn: error: x")])
    md = tc.markdown(before, after)
    assert "Handled well: 0 of 1 before, 1 of 1 after" in md and "x \\| y" in md
    tc.atomic_write(tmp_path / "r.json", json.dumps(after))
    assert json.loads((tmp_path / "r.json").read_text()) == after


def test_busy_run_case_fails_when_the_running_training_is_replaced(bench_script, tmp_path):
    import sys
    import time

    tc = bench_script("trust_cases")
    import trust_fixtures as fx

    case = _case(tc, "train-into-busy-run")
    cmd, watch = case.beside
    assert "--epochs 200" in cmd and watch == "run/checkpoint.pt"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"epochs": 200}))
    refused = _outcome(tc, tmp_path, stderr="locallearn: error: run directory run is in use by pid 7\n")
    assert case.check(refused) is None
    (tmp_path / "run" / "config.json").write_text(json.dumps({"epochs": 1}))  # what --force did
    assert "replaced" in case.check(_outcome(tc, tmp_path, rc=0, stderr=""))
    # the command beside: waited for until it makes its file, and a reason if it ends first
    env = {"PATH": "/usr/bin:/bin"}
    make = [sys.executable, "-c", "import pathlib, time; time.sleep(0.3); pathlib.Path('f').write_text('x')"]
    assert fx.start_beside(make, tmp_path, env, tmp_path / "log", tmp_path / "f", time.monotonic() + 30) is None
    assert (tmp_path / "f").is_file()
    why = fx.start_beside([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, env, tmp_path / "log",
                          tmp_path / "g", time.monotonic() + 30)
    assert why == "the command beside ended (exit 3) before making g"
