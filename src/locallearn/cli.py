"""`locallearn train | eval | export | list | demo` — a thin map onto the library."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from .config import AMP_CHOICES, TrainConfig
from .errors import ConfigError

PROG = "locallearn"


def _int_list(text: str) -> List[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_head_opts(method: str, items: Sequence[str], model: str = "resnet32") -> Dict[str, Any]:
    """Turn ``KEY=VALUE`` strings into typed head options (types from the defaults)."""
    from .heads import head_options
    from .methods import parse_method
    from .nets import MODELS

    spec = parse_method(method)
    if not items:
        return {}
    head = spec.head
    if head == "auto":  # the model family's default head
        from .nets import create_model

        import torch

        MODELS.get(model)
        with torch.device("meta"):
            head = create_model(model).default_head
    defaults = head_options(head) if head else {}
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"head option {item!r} must look like KEY=VALUE")
        if key not in defaults:
            raise ConfigError(f"unknown option {key!r} for head {head!r} "
                              f"(choose from: {', '.join(sorted(defaults)) or 'none'})")
        default = defaults[key]
        try:
            if isinstance(default, bool):
                out[key] = value.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, (tuple, list)):
                out[key] = tuple(float(v) for v in value.split(","))
            elif isinstance(default, (int, float)):
                out[key] = type(default)(value)
            else:
                out[key] = value
        except ValueError:
            raise ConfigError(f"bad value {value!r} for head option {key!r} "
                              f"(default {default!r})") from None
        numbers = out[key] if isinstance(out[key], tuple) else (out[key],)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ConfigError(f"head option {key}={value} must be finite")
    return out


def _add_train(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train a model with a local-learning method")
    p.add_argument("--model", default=d.model, help="registered model (see `locallearn list`)")
    p.add_argument("--method", default=d.method, help="e2e, or HEAD[+ema|+man|+manpp], e.g. infopro+manpp")
    p.add_argument("--blocks", type=int, default=None, help="K gradient-isolated blocks (e2e: 1)")
    p.add_argument("--boundaries", type=_int_list, default=None,
                   help="explicit K-1 unit indices where blocks 2..K start, e.g. 1,6,11")
    p.add_argument("--split", default=d.split,
                   help="equal (same number of units per block) or memory (balance the "
                        "activations measured by a dry run)")
    p.add_argument("--dataset", default=d.dataset,
                   help="fashion-mnist, cifar10, svhn, stl10, synthetic[:CxHxW[:classes]]")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset's files")
    p.add_argument("--download", action="store_true", help="download torchvision datasets if missing")
    p.add_argument("--image-size", type=int, default=None,
                   help="training crop size for imagefolder (default 224)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--no-nesterov", action="store_true", help="plain SGD momentum (needed "
                   "for --momentum 0)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--amp", default=d.amp, help=f"autocast: {', '.join(AMP_CHOICES)}")
    p.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    p.add_argument("--limit-train", type=int, default=None, help="use the first N training samples")
    p.add_argument("--limit-test", type=int, default=None, help="use the first N test samples")
    p.add_argument("--lb", default=d.lb, help="learnable bias of MAN/MAN++: unit or channel")
    p.add_argument("--ema-momentum", type=float, default=d.ema_momentum)
    p.add_argument("--bridge-init", default=d.bridge_init,
                   help="MAN/MAN++ copies start as a copy of the unit (copy) or freshly "
                        "initialised, as in the reference code (random)")
    p.add_argument("--recompute", action="store_true",
                   help="recompute the bridge copies in backward (less memory, more time)")
    p.add_argument("--head-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="head option, e.g. loss=ce or ixx=5,0.2 (repeatable; see `locallearn list`)")
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--ddp", action="store_true",
                   help="data parallel over the processes of `torchrun --nproc-per-node N -m locallearn train ...`")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--force", action="store_true",
                   help="start a new run in a non-empty --out, replacing its run files "
                        "(config.json, metrics.csv, summary.json, curves.png, checkpoint.pt)")
    p.add_argument("--nan-patience", type=int, default=d.nan_patience,
                   help="steps with a NaN/inf loss tolerated before the run stops with an error")
    p.add_argument("--dist-timeout", type=float, default=d.dist_timeout,
                   help="--ddp: seconds a rank waits for its peers before the job ends")
    p.add_argument("--checkpoint-minutes", type=float, default=d.checkpoint_minutes,
                   help="also checkpoint mid-epoch this often (0: after each epoch only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _not_applicable(a: argparse.Namespace) -> None:
    """Refuse options that the chosen method cannot use (they would be ignored)."""
    from .methods import parse_method

    d, spec = TrainConfig(), parse_method(a.method)
    if spec.is_e2e:
        given = [f for f, on in (("--blocks", a.blocks not in (None, 1)),
                                 ("--boundaries", bool(a.boundaries)),
                                 ("--head-opt", bool(a.head_opt)),
                                 ("--split", a.split != d.split)) if on]
        if given:
            raise ConfigError(f"{', '.join(given)} cannot apply to e2e (one block, no heads); "
                              "choose a local method, e.g. --method dgl+manpp")
    bridge_opts = (("--lb", a.lb != d.lb), ("--ema-momentum", a.ema_momentum != d.ema_momentum),
                   ("--bridge-init", a.bridge_init != d.bridge_init),
                   ("--recompute", a.recompute))
    if spec.bridge is None:
        given = [f for f, on in bridge_opts if on]
        if given:
            raise ConfigError(f"{', '.join(given)} set the MAN/MAN++ bridge, which method "
                              f"{a.method!r} has none of; add one, e.g. "
                              f"--method {spec.head if spec.head else 'dgl'}+manpp")
    if spec.bridge == "ema" and a.lb != d.lb:
        raise ConfigError(f"--lb sets the learnable copy, which {a.method!r} (EMA only) "
                          "does not have; use +man or +manpp")
    if a.dist_timeout != d.dist_timeout and not a.ddp:
        raise ConfigError("--dist-timeout applies to --ddp jobs (launched by torchrun)")
    if a.boundaries is not None and a.split != d.split:
        raise ConfigError("--boundaries gives the cuts and --split memory chooses them: "
                          "pass one of the two")
    if a.download and a.dataset.partition(":")[0] == "imagefolder":
        print(f"{PROG}: warning: --download is not used by imagefolder (read from --data-dir)",
              file=sys.stderr)
    if a.dataset.partition(":")[0] == "synthetic":
        for flag, on in (("--data-dir", a.data_dir is not None), ("--download", a.download)):
            if on:
                print(f"{PROG}: warning: {flag} is not used by synthetic data (generated)",
                      file=sys.stderr)


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """Map parsed ``train`` arguments 1:1 onto a TrainConfig."""
    from .methods import parse_method
    from .nets import create_model

    spec = parse_method(a.method)
    _not_applicable(a)
    blocks = a.blocks
    if a.boundaries is not None:  # K-1 cut points imply K
        if not a.boundaries:
            raise ConfigError("--boundaries needs at least one unit index, e.g. 1,6,11")
        if blocks is not None and blocks != len(a.boundaries) + 1:
            raise ConfigError(f"--boundaries {','.join(map(str, a.boundaries))} make "
                              f"{len(a.boundaries) + 1} blocks but --blocks is {blocks}; "
                              "pass --boundaries alone")
        blocks = len(a.boundaries) + 1
    if blocks is None:
        if not spec.is_e2e:
            import torch

            with torch.device("meta"):
                units = create_model(a.model).num_body_units
            raise ConfigError(f"method {a.method!r} needs --blocks K (1..{units} for {a.model})")
        blocks = 1
    return TrainConfig(
        model=a.model, method=str(spec), blocks=blocks, dataset=a.dataset, data_dir=a.data_dir,
        image_size=a.image_size,
        download=a.download, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
        momentum=a.momentum, nesterov=not a.no_nesterov, weight_decay=a.weight_decay,
        warmup_epochs=a.warmup_epochs,
        seed=a.seed, device=a.device, channels_last=a.channels_last, amp=a.amp,
        augment=not a.no_augment, limit_train=a.limit_train, limit_test=a.limit_test,
        out=a.out, lb=a.lb, ema_momentum=a.ema_momentum, recompute=a.recompute, ddp=a.ddp,
        bridge_init=a.bridge_init,
        head_opts=parse_head_opts(a.method, a.head_opt, a.model), boundaries=a.boundaries,
        split=a.split, checkpoint_minutes=a.checkpoint_minutes,
        eval_batch_size=a.eval_batch_size, nan_patience=a.nan_patience,
        dist_timeout=a.dist_timeout).validate()


#: train options a resume keeps from the command line; the rest come from config.json
RESUME_OPTIONS = ("out", "resume", "device", "data_dir", "no_progress", "command")


def _ignored_on_resume(a: argparse.Namespace) -> List[str]:
    """The options given with --resume that the saved config overrides."""
    defaults = vars(build_parser().parse_args(["train", "--out", a.out]))
    return [f"--{k.replace('_', '-')}" for k, v in vars(a).items()
            if k not in RESUME_OPTIONS and defaults.get(k) != v]


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
        create_model(cfg.model)  # fail fast on an unknown model before loading data
    summary = fit(cfg, resume=a.resume, progress=not a.no_progress, force=a.force)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        dist.destroy_process_group()
        if rank != 0:  # rank 0 reports
            return 0
    print(json.dumps({k: summary[k] for k in ("model", "method", "blocks", "epochs",
                                              "final_test_acc", "best_test_acc",
                                              "wall_time_s")}, indent=2))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .devices import resolve_device
    from .run_dir import check_new_file
    from .train import evaluate, head_report, load_run

    if a.json and not a.heads:
        raise ConfigError("--json writes the per-block rows of --heads; add --heads")
    if a.json:
        check_new_file(Path(a.json), force=a.force, what="--json")
    cfg, net, data = load_run(Path(a.run), device=a.device, data_dir=a.data_dir)
    device = resolve_device(a.device)
    batches = data.test_batches(cfg.eval_batch_size, device)
    if not a.heads:
        acc = evaluate(net, batches, device)
        print(f"{cfg.model} {net.spec} K={net.k} on {cfg.dataset} test: "
              f"{100 * acc:.2f}%")
        return 0
    rows = head_report(net, batches, device)
    print(f"{cfg.model} {net.spec} K={net.k} on {cfg.dataset}: test accuracy of each "
          f"block's classifier (the last is the network's)")
    print(f"{'block':>5}  {'units':>7}  {'test acc %':>10}  {'bridge scale':>12}  {'EMA lag':>7}")
    for r in rows:
        acc, s, lag = r["test_acc"], r["bridge_scale"], r["ema_lag"]
        units = f"{r['units'][0]}-{r['units'][1] - 1}"
        print(f"{r['block']:>5}  {units:>7}  {'-' if acc is None else f'{100 * acc:.2f}':>10}  "
              f"{'-' if s is None else f'{s:.3f}':>12}  {'-' if lag is None else f'{lag:.3f}':>7}")
    if a.json:
        from .checkpoint import atomic_write_text

        atomic_write_text(Path(a.json), json.dumps(dict(model=cfg.model, method=str(net.spec),
                                                        blocks=net.k, rows=rows), indent=2) + "\n")
        print(f"wrote {a.json}")
    return 0


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
    from .methods import list_methods
    from .nets import create_model, list_models

    import torch

    print("models:")
    with torch.device("meta"):  # sizes only: no memory, no weight init
        for name in list_models():
            print(f"  {name:28s} {create_model(name).num_body_units:3d} units (K = 1..that)")
    print("methods:\n  " + ", ".join(list_methods()))
    print("head options (--head-opt KEY=VALUE):")
    for name in HEADS.names():
        opts = ", ".join(f"{k}={v}" for k, v in head_options(name).items()) or "none"
        print(f"  {name:8s} {opts}")
    print("datasets:\n  " + ", ".join(list_datasets()))
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
    print(f"{spec.model}, batch {spec.batch_size}, {spec.in_chans}x{spec.image_size}x{spec.image_size}, "
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
    p = sub.add_parser("eval", help="test accuracy of a run's last checkpoint")
    p.add_argument("--run", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--heads", action="store_true",
                   help="also the accuracy of every block's auxiliary classifier, MAN++'s "
                        "learned bridge scales and how far each EMA copy trails its unit")
    p.add_argument("--json", default=None, help="with --heads: write the rows here")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
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
    return parser


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "export": cmd_export, "list": cmd_list,
            "demo": cmd_demo, "bench": cmd_bench}


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
