"""The ``train`` command's options: argparse -> a validated TrainConfig, refusing what
cannot apply and naming what a resume ignores."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Dict, List, Sequence, Set, Tuple

from .config import AMP_CHOICES, OPTIMIZERS, TrainConfig
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


def split_head_opts(method: str, items: Sequence[str],
                    model: str = "resnet32") -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """``--head-opt`` items: ``KEY=VALUE`` for every head, ``N:KEY=VALUE`` for head N
    alone. Returns (options of every head, {"N": options of head N})."""
    shared: List[str] = []
    per: Dict[str, List[str]] = {}
    for item in items:
        index, colon, rest = item.partition(":")
        if colon and "=" not in index:
            if not index.strip().isdigit():
                raise ConfigError(f"head option {item!r}: the part before ':' must be a head "
                                  "index (0 = the first head), e.g. 0:loss=supcon")
            per.setdefault(str(int(index)), []).append(rest)
        else:
            shared.append(item)
    return (parse_head_opts(method, shared, model),
            {j: parse_head_opts(method, opts, model) for j, opts in per.items()})


def explicit_options(argv: Sequence[str]) -> Set[str]:
    """The TrainConfig fields that ``train`` arguments ``argv`` set by hand (a preset fills
    the others), found by parsing them again with every default suppressed."""
    from .cli import build_parser

    parser = build_parser()
    for action in parser._actions:  # the subcommands' parsers
        for sub in getattr(action, "choices", None) or {}:
            if isinstance(action.choices, dict):
                for opt in action.choices[sub]._actions:
                    opt.default = argparse.SUPPRESS
    return fields_of(vars(parser.parse_args(list(argv))))


def fields_of(dests) -> Set[str]:
    """TrainConfig field names of parsed ``train`` destinations (``--head-opt`` fills
    both head_opts and head_overrides)."""
    rename = {"no_nesterov": "nesterov", "no_augment": "augment", "head_opt": "head_opts"}
    return {rename.get(d, d) for d in dests} | ({"head_overrides"} if "head_opt" in dests else set())


def _add_train(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train a model with a local-learning method")
    p.add_argument("--model", default=d.model, help="registered model (see `locallearn list`)")
    p.add_argument("--method", default=d.method, help="e2e, or HEAD[+ema|+man|+manpp], e.g. infopro+manpp")
    p.add_argument("--blocks", type=int, default=None, help="K gradient-isolated blocks (e2e: 1)")
    p.add_argument("--boundaries", type=_int_list, default=None,
                   help="explicit K-1 unit indices where blocks 2..K start, e.g. 1,6,11")
    p.add_argument("--split", default=d.split,
                   help="equal (same number of units per block), memory (balance the "
                        "activations measured by a dry run), time (balance the units' "
                        "measured forward + backward time: even pipeline stages), stages (cut at every "
                        "downsampling: the MAN++ COCO K=4 on a ResNet), reference (the "
                        "MAN++ code's K tables; its K=8 on resnet32 is 9 blocks) or "
                        "reference-man (the MAN code's: the stem in the first block)")
    p.add_argument("--preset", default=None,
                   help="a named recipe of options, e.g. manpp-cifar-dgl (see `locallearn "
                        "list`); options given by hand win")
    p.add_argument("--dataset", default=d.dataset,
                   help="fashion-mnist, cifar10, svhn, stl10, synthetic[:CxHxW[:classes]], imagefolder; "
                        "segmentation: fmnist-scenes[:seed=N], voc-seg, cityscapes; "
                        "super-resolution: sr-photos, div2k, sr-folder (each [:scale=N,patches=N])")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset's files")
    p.add_argument("--download", action="store_true", help="download torchvision datasets if missing")
    p.add_argument("--image-size", type=int, default=None,
                   help="imagefolder's crop size (default 224); the segmentation sets' size "
                        "(fmnist-scenes 128, voc-seg 256, cityscapes 256 = height, width 2x); "
                        "super-resolution: the low-resolution training patch (default 48)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--optimizer", default=d.optimizer,
                   help=f"each block's optimizer: {', '.join(OPTIMIZERS)} (AdamW: default "
                        "betas, decoupled --weight-decay)")
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    p.add_argument("--no-nesterov", action="store_true", help="plain SGD momentum (needed "
                   "for --momentum 0)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--clip-grad-norm", type=float, default=d.clip_grad_norm, metavar="X",
                   help="clip each block's gradient norm to X before its step (0: off)")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--warmup-start-lr", type=float, default=d.warmup_start_lr,
                   help="the warm-up's first lr (capped at --lr: a warm-up never starts "
                        "above its peak)")
    p.add_argument("--lr-schedule", default=d.lr_schedule,
                   help="cosine (per step, after a linear warm-up) or epoch (the reference "
                        "code: one cosine value per epoch, blended warm-up)")
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
                   help="MAN/MAN++ copies start as a copy of the unit (copy), from one fresh "
                        "default init (random), or each redrawn with the reference code's "
                        "init (reference)")
    p.add_argument("--ema-timing", default=d.ema_timing,
                   help="the EMA copy follows its unit after the optimizer steps "
                        "(after-step) or right after its block's backward, before any step "
                        "(before-step: the reference code)")
    p.add_argument("--head-init", default=d.head_init,
                   help="default, or reference (heads' convs redrawn as the reference does)")
    p.add_argument("--recompute", action="store_true",
                   help="recompute the bridge copies in backward (less memory, more time)")
    p.add_argument("--head-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="head option, e.g. loss=ce or ixx=5,0.2; N:KEY=VALUE sets it for "
                        "head N alone, e.g. 0:loss=supcon (repeatable; see `locallearn list`)")
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--ddp", action="store_true",
                   help="data parallel over the processes of `torchrun --nproc-per-node N -m locallearn train ...`")
    p.add_argument("--pipeline", action="store_true",
                   help="PPLL: the blocks spread over the processes of `torchrun "
                        "--nproc-per-node N -m locallearn train ... --pipeline` (N <= K)")
    p.add_argument("--pipeline-mode", default=d.pipeline_mode, choices=None,
                   help="stream (ranks overlap) or lockstep (one batch in the pipe: exactly "
                        "single-process training)")
    p.add_argument("--pipeline-depth", type=int, default=d.pipeline_depth,
                   help="stream: batches in flight per link (also the EMA copies' lag in steps)")
    p.add_argument("--ema-sync-every", type=int, default=d.ema_sync_every,
                   help="--pipeline: steps between fetches of the next rank's unit for the EMA")
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
                                 ("--head-init", a.head_init != d.head_init),
                                 ("--split", a.split != d.split)) if on]
        if given:
            raise ConfigError(f"{', '.join(given)} cannot apply to e2e (one block, no heads); "
                              "choose a local method, e.g. --method dgl+manpp")
    bridge_opts = (("--lb", a.lb != d.lb), ("--ema-momentum", a.ema_momentum != d.ema_momentum),
                   ("--bridge-init", a.bridge_init != d.bridge_init),
                   ("--ema-timing", a.ema_timing != d.ema_timing),
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
    if a.optimizer != "sgd":  # an unknown name is validate()'s to report, with the choices
        given = [f for f, on in (("--momentum", a.momentum != d.momentum),
                                 ("--no-nesterov", a.no_nesterov)) if on]
        if given and a.optimizer in OPTIMIZERS:
            verb, it = ("belongs", "it") if len(given) == 1 else ("belong", "them")
            raise ConfigError(f"{', '.join(given)} {verb} to SGD, unused by --optimizer "
                              f"{a.optimizer}; drop {it} or use --optimizer sgd")
    if a.dist_timeout != d.dist_timeout and not (a.ddp or a.pipeline):
        raise ConfigError("--dist-timeout applies to --ddp and --pipeline jobs (launched by "
                          "torchrun)")
    pipe_opts = [f for f, on in (("--pipeline-mode", a.pipeline_mode != d.pipeline_mode),
                                 ("--pipeline-depth", a.pipeline_depth != d.pipeline_depth),
                                 ("--ema-sync-every", a.ema_sync_every != d.ema_sync_every))
                 if on]
    if pipe_opts and not a.pipeline:
        raise ConfigError(f"{', '.join(pipe_opts)} apply to --pipeline jobs; add --pipeline")
    if a.pipeline_mode == "lockstep" and a.pipeline_depth != d.pipeline_depth:
        raise ConfigError("--pipeline-depth sets the streaming pipe; lockstep keeps one batch "
                          "in it (drop one of the two)")
    if a.boundaries is not None and a.split != d.split:
        raise ConfigError(f"--boundaries gives the cuts and --split {a.split} chooses them: "
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

    given = getattr(a, "given", None)  # set by main() from the command line itself
    if given is None:  # parsed elsewhere: what differs from the defaults was given
        from .cli import build_parser

        defaults = vars(build_parser().parse_args(["train", "--out", a.out]))
        given = fields_of([k for k, v in vars(a).items() if defaults.get(k, v) != v])
    given = set(given)
    if a.preset is not None:
        from .presets import PRESETS

        preset = PRESETS.get(a.preset)  # an unknown name: the list of presets
        if "method" not in given and "method" in preset.settings:
            a.method = preset.settings["method"]
        if a.blocks is None and not parse_method(a.method).is_e2e:
            a.blocks = preset.settings.get("blocks")
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
    head_opts, head_overrides = split_head_opts(a.method, a.head_opt, a.model)
    cfg = TrainConfig(
        model=a.model, method=str(spec), blocks=blocks, dataset=a.dataset, data_dir=a.data_dir,
        image_size=a.image_size,
        download=a.download, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
        optimizer=a.optimizer, momentum=a.momentum, nesterov=not a.no_nesterov,
        weight_decay=a.weight_decay, clip_grad_norm=a.clip_grad_norm,
        warmup_epochs=a.warmup_epochs, warmup_start_lr=a.warmup_start_lr,
        lr_schedule=a.lr_schedule, ema_timing=a.ema_timing, head_init=a.head_init,
        seed=a.seed, device=a.device, channels_last=a.channels_last, amp=a.amp,
        augment=not a.no_augment, limit_train=a.limit_train, limit_test=a.limit_test,
        out=a.out, lb=a.lb, ema_momentum=a.ema_momentum, recompute=a.recompute, ddp=a.ddp,
        pipeline=a.pipeline, pipeline_mode=a.pipeline_mode, pipeline_depth=a.pipeline_depth,
        ema_sync_every=a.ema_sync_every,
        bridge_init=a.bridge_init,
        head_opts=head_opts, head_overrides=head_overrides, boundaries=a.boundaries,
        split=a.split, checkpoint_minutes=a.checkpoint_minutes,
        eval_batch_size=a.eval_batch_size, nan_patience=a.nan_patience,
        dist_timeout=a.dist_timeout)
    if a.preset is not None:
        from .presets import apply_preset

        for line in apply_preset(cfg, a.preset, given):
            print(f"{PROG}: {line}", file=sys.stderr)
    blocks_before = cfg.blocks
    cfg.validate()
    if cfg.split.startswith("reference") and cfg.blocks != blocks_before:
        from .reference import reference_block_sizes

        alone = cfg.split == "reference"
        stem = "the stem trains as a block of its own" if alone else "the stem joins the first module"
        print(f"{PROG}: split {cfg.split}: the reference's K={blocks_before} is {cfg.blocks} "
              f"blocks here ({stem}), units per block "
              f"{reference_block_sizes(cfg.model, blocks_before, alone)}", file=sys.stderr)
    return cfg


#: train options a resume keeps from the command line; the rest come from config.json
RESUME_OPTIONS = ("out", "resume", "device", "data_dir", "no_progress", "command", "given")


def _ignored_on_resume(a: argparse.Namespace) -> List[str]:
    """The options given with --resume that the saved config overrides."""
    from .cli import build_parser  # the one parser, whose defaults are the reference

    defaults = vars(build_parser().parse_args(["train", "--out", a.out]))
    return [f"--{k.replace('_', '-')}" for k, v in vars(a).items()
            if k not in RESUME_OPTIONS and defaults.get(k) != v]
