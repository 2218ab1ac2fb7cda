"""`locallearn train | eval | export | list | demo` — a thin map onto the library."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn, Optional, Sequence, Tuple

from .config import TrainConfig
from .errors import ConfigError

from .cli_analyze import add_analyze, cmd_analyze, cmd_compare
from .cli_train import (PROG, _add_train, _ignored_on_resume, _int_list,  # noqa: F401
                        config_from_args, parse_head_opts)


def cmd_train(a: argparse.Namespace) -> int:
    from .nets import create_model
    from .train import fit

    if a.resume:
        if a.force:
            raise ConfigError("--resume continues the run in --out and --force starts it "
                              "over: pass one of the two")
        cfg = TrainConfig(out=a.out, device=a.device, data_dir=a.data_dir)
        ignored = _ignored_on_resume(a)
        if ignored:
            print(f"{PROG}: resuming {a.out} with its saved config.json; ignoring "
                  f"{', '.join(ignored)} (a resumed run keeps its recipe)", file=sys.stderr)
    else:
        cfg = config_from_args(a)
        import torch

        from .methods import check_method_task

        with torch.device("meta"):  # fail fast on an unknown model before loading data
            model = create_model(cfg.model)
        # a head family that cannot serve the model's task: refused before --force
        # deletes anything or data is loaded
        check_method_task(cfg.method, model.default_head, model.task)
        from .data.base import dataset_task
        from .tasks import check_same_task

        check_same_task(model.task, dataset_task(cfg.dataset), cfg.model, cfg.dataset)
    summary = fit(cfg, resume=a.resume, progress=not a.no_progress, force=a.force)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:  # rank 0 reports
            return 0
    keys = ["model", "method", "blocks", "epochs",
            *(k for k in summary if k.startswith(("final_test_", "best_test_"))), "wall_time_s"]
    print(json.dumps({k: summary[k] for k in keys}, indent=2))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .devices import resolve_device
    from .run_dir import check_new_file
    from .train import evaluate_metrics, head_report, load_run

    if a.json and not a.heads:
        raise ConfigError("--json writes the per-block rows of --heads; add --heads")
    if a.json:
        check_new_file(Path(a.json), force=a.force, what="--json")
    if a.vs and not a.crops:
        raise ConfigError("--vs adds runs to the --crops figure; add --crops FILE.png")
    if a.crops:
        check_new_file(Path(a.crops), force=a.force, what="--crops")
    cfg, net, data = load_run(Path(a.run), device=a.device, data_dir=a.data_dir)
    device = resolve_device(a.device)
    batches = data.test_batches(cfg.eval_batch_size, device)
    primary = net.task.primary
    if not a.heads:
        scores = evaluate_metrics(net, batches, device)
        shown = (f"{100 * scores['acc']:.2f}%" if list(scores) == ["acc"] else
                 "  ".join(f"{k} {net.task.show(k, v)}" for k, v in scores.items()))
        print(f"{cfg.model} {net.spec} K={net.k} on {cfg.dataset} test: {shown}")
        if net.task.name == "super_resolution":
            _sr_extras(a, cfg, net, data, device)
        elif a.crops:
            raise ConfigError(f"--crops draws super-resolution outputs; {a.run} is a "
                              f"{net.task.name} run")
        return 0
    rows = head_report(net, batches, device)
    print(f"{cfg.model} {net.spec} K={net.k} on {cfg.dataset}: test {primary} of each "
          f"block's predictor (the last is the network's)")
    title = f"test {primary}"
    print(f"{'block':>5}  {'units':>7}  {title:>10}  {'bridge scale':>12}  {'EMA lag':>7}")
    for r in rows:
        acc, s, lag = r[f"test_{primary}"], r["bridge_scale"], r["ema_lag"]
        units = f"{r['units'][0]}-{r['units'][1] - 1}"
        print(f"{r['block']:>5}  {units:>7}  {'-' if acc is None else net.task.show(primary, acc):>10}  "
              f"{'-' if s is None else f'{s:.3f}':>12}  {'-' if lag is None else f'{lag:.3f}':>7}")
    if a.json:
        from .checkpoint import atomic_write_text

        atomic_write_text(Path(a.json), json.dumps(dict(model=cfg.model, method=str(net.spec),
                                                        blocks=net.k, rows=rows), indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0


def _test_set(cfg: TrainConfig) -> Tuple[str, Optional[int]]:
    """What a run is evaluated on: the dataset's name (its options only shape training) and
    how many test images it keeps."""
    return cfg.dataset.split(":", 1)[0], cfg.limit_test


def _sr_extras(a: argparse.Namespace, cfg: TrainConfig, net: "object", data: "object",
               device: "object") -> None:
    """Super-resolution: the bicubic baseline's scores, and with --crops the side-by-side PNG."""
    from .sr_report import bicubic_scores, write_crops
    from .train import load_run

    base = bicubic_scores(data, net.task)  # type: ignore[attr-defined]
    print(f"bicubic upscaling on {cfg.dataset} test: "
          + "  ".join(f"{k} {net.task.show(k, v)}" for k, v in base.items()))  # type: ignore[attr-defined]
    if not a.crops:
        return
    runs = [(f"{net.spec} K={net.k}", net)]  # type: ignore[attr-defined]
    for other in a.vs or []:
        ocfg, onet, _ = load_run(Path(other), device=a.device, data_dir=a.data_dir)
        # one test set and scale; training options (patches=, the LR patch size) may differ
        if _test_set(ocfg) != _test_set(cfg) or \
                getattr(onet.model, "scale", None) != getattr(net.model, "scale", None):  # type: ignore[attr-defined]
            raise ConfigError(f"--vs {other} was trained on {ocfg.dataset} with "
                              f"{ocfg.model}; {a.run} on {cfg.dataset} with {cfg.model}: "
                              "crops compare runs of one test set and scale")
        runs.append((f"{onet.spec} K={onet.k}", onet))
    path = write_crops(Path(a.crops), data, runs, device)  # type: ignore[arg-type]
    print(f"wrote {path}")


def cmd_export(a: argparse.Namespace) -> int:
    from .export import export_backbone
    from .run_dir import check_new_file
    from .train import load_run

    check_new_file(Path(a.out), force=a.force)  # before the (slow) load
    cfg, net, data = load_run(Path(a.run), device="cpu", data_dir=a.data_dir)
    meta = {"model": cfg.model, "num_classes": data.num_classes, "in_chans": data.in_chans,
            "mean": list(data.mean), "std": list(data.std), "method": str(net.spec),
            "blocks": net.k, "dataset": cfg.dataset, "image_size": list(data.image_size)}
    path = export_backbone(net, Path(a.out), meta)
    print(f"wrote {path} ({sum(p.numel() for p in net.model.parameters())} parameters, "
          f"load with locallearn.load_backbone)")
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from .data import list_datasets
    from .heads import HEADS, head_options
    from .methods import methods_for_task
    from .nets import create_model, list_models
    from .tasks import list_tasks

    import torch

    print("models (task, units: K = 1..that, input C x H x W, default head for a bridge-only "
          "method; the model's recipe: its options per head family):")
    with torch.device("meta"):  # sizes only: no memory, no weight init
        for name in list_models():
            m = create_model(name)
            size = "any" if m.input_size is None else "x".join(map(str, m.input_size))
            lb = f", LB depth {m.lb_depth}" if m.lb_depth != 1 else ""
            print(f"  {name:28s} {m.task:14s} {m.num_body_units:3d} units  input {size:10s} "
                  f"default head {m.default_head}{lb}")
            for family, opts in sorted(m.head_recipes.items()):
                shown = ", ".join(f"{k}={v}" for k, v in opts.items())
                print(f"  {'':28s}   {family} recipe: {shown}")
    print("methods per task (--method):")
    for task in list_tasks():
        print(f"  {task}: {', '.join(methods_for_task(task))}")
    print("head options (--head-opt KEY=VALUE; a model's recipe overrides these defaults):")
    for name in HEADS.names():
        opts = ", ".join(f"{k}={v}" for k, v in head_options(name).items()) or "none"
        print(f"  {name:8s} {opts}")
    print("datasets:\n  " + ", ".join(list_datasets()))
    from .presets import PRESETS, list_presets
    from .reference import reference_split_models

    print("presets (--preset NAME: these options at once; options given by hand win):")
    for name in list_presets():
        preset = PRESETS.get(name)
        print(f"  {name}: {preset.source}")
        print("    " + ", ".join(f"{k}={v}" for k, v in preset.settings.items()))
    print("reference splits (--split reference; K as in the reference code's tables): "
          + "; ".join(f"{m} K={','.join(map(str, ks))}" for m, ks in reference_split_models().items()))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=Path(a.out), epochs=a.epochs, limit_train=a.limit_train,
             limit_test=a.limit_test, blocks=a.blocks, device=a.device,
             data_dir=a.data_dir, progress=not a.no_progress, download=a.download)
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from .checkpoint import atomic_write_text
    from .measure.bench import BenchSpec, environment, format_table, run_bench

    for flag, value, low in (("--repeats", a.repeats, 1), ("--warmup", a.warmup, 0),
                             ("--num-classes", a.num_classes, 2)):
        if value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    if not a.blocks or min(a.blocks) < 1:
        raise ConfigError(f"--blocks needs K values >= 1, got {a.blocks}")
    spec = BenchSpec(model=a.model, methods=[m for m in a.method.split(",") if m],
                     blocks=a.blocks, batch_size=a.batch_size, device=a.device,
                     image_size=a.image_size, in_chans=a.in_chans, num_classes=a.num_classes,
                     channels_last=not a.no_channels_last, warmup=a.warmup, repeats=a.repeats,
                     lb=a.lb, recompute=a.recompute, split=a.split)
    from .nets import create_model

    create_model(spec.model)  # unknown model: fail before measuring anything
    if a.mode not in ("memory", "speed"):
        from .errors import choice_error

        raise choice_error("bench mode", a.mode, ("memory", "speed"))
    if a.json:
        from .run_dir import check_new_file

        check_new_file(Path(a.json), force=a.force, what="--json")
    rows = run_bench(a.mode, spec)
    print(f"{spec.model}, batch {spec.batch_size}, {spec.in_chans}x{spec.hw[0]}x{spec.hw[1]}, "
          f"{rows[0]['device']} (x = ratio to e2e in this run)")
    print(format_table(rows))
    if a.json:
        atomic_write_text(Path(a.json), json.dumps({"env": environment(), "mode": a.mode,
                                                     "rows": rows}, indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="memory / speed / FLOPs of a training step vs E2E")
    p.add_argument("mode", help="memory or speed")
    p.add_argument("--model", default="resnet32")
    p.add_argument("--method", default="e2e", help="comma-separated specs, e.g. dgl,dgl+manpp")
    p.add_argument("--blocks", type=_int_list, default=[1], help="comma-separated K values")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--lb", default="unit")
    p.add_argument("--recompute", action="store_true", help="recompute the bridge copies in backward")
    p.add_argument("--split", default="equal", help="equal or memory")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None, help="write the rows (and environment) here")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit code 2), like every other."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Supervised local learning for vision networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    _add_train(sub)
    p = sub.add_parser("eval", help="test metrics of a run's last checkpoint")
    p.add_argument("--run", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--heads", action="store_true",
                   help="also the accuracy of every block's auxiliary classifier, MAN++'s "
                        "learned bridge scales and how far each EMA copy trails its unit")
    p.add_argument("--json", default=None, help="with --heads: write the rows here")
    p.add_argument("--crops", default=None, metavar="PNG",
                   help="super-resolution: write side-by-side crops (bicubic / this run / "
                        "each --vs run / HR) of the first test images to this PNG")
    p.add_argument("--vs", action="append", default=None, metavar="RUN",
                   help="with --crops: another run of the same dataset to show (repeatable)")
    p.add_argument("--force", action="store_true", help="replace an existing --json / --crops file")
    p = sub.add_parser("export", help="write the plain backbone of a run as safetensors")
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True, help="a new .safetensors file")
    p.add_argument("--force", action="store_true",
                   help="replace an existing file (never one of a run's own files)")
    p.add_argument("--data-dir", default=None)
    sub.add_parser("list", help="models, methods, head options, datasets")
    _add_bench(sub)
    p = sub.add_parser("demo", help="E2E vs InfoPro+MAN++ on Fashion-MNIST in a few minutes")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit-train", type=int, default=10000)
    p.add_argument("--limit-test", type=int, default=2000)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--download", action="store_true",
                   help="download Fashion-MNIST if it is not installed (no network otherwise)")
    p.add_argument("--no-progress", action="store_true")
    add_analyze(sub)
    return parser


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "export": cmd_export, "list": cmd_list,
            "demo": cmd_demo, "bench": cmd_bench, "analyze": cmd_analyze, "compare": cmd_compare}


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM outside a training loop (which checkpoints first): end like Ctrl-C."""
    raise KeyboardInterrupt(signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: a user mistake prints one line and returns 2; a run that cannot go on
    (NaN loss, a failed peer rank) one line and 1; a signal one line and 128 + its number."""
    import os
    import signal

    from .stop import RunError, Stopped

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":  # which options were typed: a --preset fills the rest
        from .cli_train import explicit_options

        args.given = explicit_options(sys.argv[1:] if argv is None else argv)
    # under torchrun every rank meets the same mistake: rank 0 alone says it
    quiet = os.environ.get("RANK", "0") != "0"

    def say(text: str) -> None:
        if not quiet:
            print(f"{PROG}: {text}", file=sys.stderr)

    old = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        say(f"error: {e}")
        return 2
    except RunError as e:  # every rank: the message names the rank that failed
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except Stopped as e:
        say(str(e))
        return e.exit_code
    except BrokenPipeError:  # e.g. `locallearn list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:
        signum = e.args[0] if e.args and isinstance(e.args[0], int) else signal.SIGINT
        say(f"stopped by {signal.Signals(signum).name}; runs are checkpointed after each "
            "epoch and every --checkpoint-minutes (continue with --resume)")
        return 128 + int(signum)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
