"""The trust audit's cases (issue 13), by section: 1 data loss .. 6 python API
(run and judged by benchmarks/trust_cases.py)."""

import signal
from typing import List, Optional, Tuple

import trust_fixtures as fx
from trust_checks import (Case, Check, Prep, all_of, api_error, clean_stop, config_epochs, config_resolved,
                          ends_in_time, mentions, never_mentions, no_network, no_temp_files,
                          prints, refused_or_warned, replaced, same_metrics, stdout_is,
                          stops_on_nan, succeeds, unchanged, user_mistake, valid_config)

# ---- the cases

T = "locallearn train $TINY"
B = "locallearn train $BASE"
EVAL, EXPORT = "locallearn eval --run", "locallearn export --run"
DDP = "torchrun --standalone --nproc-per-node 2 -m locallearn train $TINY --ddp"
BENCH = "locallearn bench speed --model resnet20 --method dgl --blocks 2 --batch-size 4 --image-size 8"
FOLDER = "--dataset imagefolder --image-size 8 --batch-size 4 --limit-train 16 --limit-test 8"
LONG = "--epochs 200 --limit-train 256"  # long enough to be signalled mid-run
KILLED = "--epochs 2 --limit-train 256 --checkpoint-minutes 0.0005"  # checkpoints every step or so
DEBIAN_FMNIST = "/usr/share/datasets/fashion-mnist"  # hidden where a case needs the data missing
PRECIOUS = b"the user's only copy\n"
NET = ("import torch; from locallearn import LocalNet, create_model; "
       "m = create_model('resnet20', num_classes=4, in_chans=1); net = LocalNet(m, 2, 'dgl', image_size=(8, 8)); "
       "x = torch.randn(16, 1, 8, 8); y = torch.randint(0, 4, (16,)); ")
CM = "from locallearn import create_model; "
TV = "import torchvision, locallearn; r18 = torchvision.models.resnet18(); "
LB = "from locallearn import load_backbone; "


def py(code: str) -> str:
    """``python -c "code"`` as typed (the code holds no double quote, backslash or backtick)."""
    assert not set(code) & set('"\\`'), code
    return f'python -c "{code}"'


def api(id: str, what: str, code: str, *names: str, may_work: bool = False) -> Case:
    return Case(id, 6, what, py(code), api_error(*names, may_work=may_work))


def um(id: str, cls: int, what: str, cmd: str, *more: Check, prep: Tuple[Prep, ...] = (),
       beside: Optional[Tuple[str, str]] = None) -> Case:
    """A user mistake: exit 2 and one line, plus ``more`` checks (judged first in class 1)."""
    checks = (*more, user_mistake) if cls == 1 else (user_mistake, *more)
    return Case(id, cls, what, cmd, all_of(*checks), prep, beside=beside)


RUN = (fx.copy("run_dgl", "run"),)
OWN = {n: unchanged(f"run/{n}", like=f"run_dgl/{n}") for n in ("checkpoint.pt", "config.json", "metrics.csv")}
MINE = (fx.write("m.safetensors", PRECIOUS),)
CORRUPT = never_mentions("weights_only")
FULL_DISK = 1 << 20  # RLIMIT_FSIZE: config.json fits, a checkpoint does not
CASES: List[Case] = [
    # 1. never lose a user's data
    um("export-onto-file", 1, "export onto an existing file", f"{EXPORT} $F/run_dgl --out $W/m.safetensors",
       unchanged("m.safetensors", PRECIOUS), prep=MINE),
    um("export-onto-checkpoint", 1, "export onto the run's own checkpoint.pt",
       f"{EXPORT} $W/run --out $W/run/checkpoint.pt", OWN["checkpoint.pt"], prep=RUN),
    um("export-onto-config", 1, "export onto the run's own config.json",
       f"{EXPORT} $W/run --out $W/run/config.json", OWN["config.json"], prep=RUN),
    um("export-force-run-file", 1, "export --force onto a file the run owns",
       f"{EXPORT} $W/run --out $W/run/metrics.csv --force", OWN["metrics.csv"], prep=RUN),
    Case("export-force", 1, "export --force replaces an unrelated file",
         f"{EXPORT} $F/run_dgl --out $W/m.safetensors --force",
         all_of(succeeds, replaced("m.safetensors", PRECIOUS)), MINE),
    um("train-into-old-run", 1, "train into a dir with an earlier run's files, no checkpoint", f"{T} --out $W/old",
       *(unchanged(f"old/{n}", like=f"run_r32/{n}") for n in ("metrics.csv", "summary.json", "config.json",
                                                             "curves.png")), prep=(fx.old_run("old"),)),
    um("train-into-old-metrics", 1, "train into a dir holding only an old metrics.csv", f"{T} --out $W/old",
       unchanged("old/metrics.csv", like="run_r32/metrics.csv"),
       prep=(fx.copy("run_r32/metrics.csv", "old/metrics.csv"),)),
    um("train-into-user-dir", 1, "train into a non-empty dir that is not a run", f"{T} --out $W/mine",
       unchanged("mine/notes.txt", PRECIOUS), prep=(fx.write("mine/notes.txt", PRECIOUS),)),
    Case("train-force-old-run", 1, "train --force into an old run's dir", f"{T} --out $W/old --force",
         succeeds, (fx.old_run("old"),)),
    um("train-onto-checkpoint", 1, "train again into a run with a checkpoint, no --resume", f"{T} --out $W/run",
       OWN["checkpoint.pt"], prep=RUN),
    um("eval-json-onto-config", 1, "eval --heads --json onto the run's own config.json",
       f"{EVAL} $W/run --heads --json $W/run/config.json", OWN["config.json"], prep=RUN),
    um("bench-json-onto-checkpoint", 1, "bench --json onto a run's checkpoint.pt",
       f"{BENCH} --repeats 1 --json $W/run/checkpoint.pt", OWN["checkpoint.pt"], prep=RUN),
    Case("sigterm-mid-run", 1, "SIGTERM mid-run: one line, non-zero, a checkpoint", f"{T} {LONG} --out $W/run",
         clean_stop(None, "run/checkpoint.pt"), action=fx.Action("run/checkpoint.pt", signal.SIGTERM)),
    Case("sigint-mid-run", 1, "Ctrl-C mid-run: one line, exit 130, a checkpoint", f"{T} {LONG} --out $W/run",
         clean_stop(130, "run/checkpoint.pt"), action=fx.Action("run/checkpoint.pt", signal.SIGINT, "group")),
    # the training beside holds the directory for the whole case (200 epochs)
    um("train-into-busy-run", 1, "train --force into a run directory a training is still using",
       f"{T} --out $W/run --force", config_epochs("run", 200), mentions("in use"),
       beside=(f"{T} {LONG} --out $W/run", "run/checkpoint.pt")),
    Case("stale-temp-resume", 1, "a .checkpoint.pt.* temp of a killed write is removed on the next start",
         "locallearn train --resume --out $W/run", all_of(succeeds, no_temp_files("run")),
         RUN + (fx.write("run/.checkpoint.pt.k3x9q_2a", b"PK\x03\x04 half a checkpoint"),)),
    # 2. never hang
    *(Case(f"ddp-stall-rank{r}", 2, f"DDP: rank {r} SIGSTOPped, --dist-timeout 20",
           f"{DDP} {LONG} --dist-timeout 20 --out $W/d", ends_in_time,
           action=fx.Action("d/checkpoint.pt", signal.SIGSTOP, f"rank{r}")) for r in (1, 0)),
    Case("ddp-stall-default", 2, "DDP: rank 1 SIGSTOPped, default timeout (300 s): ends within it + grace",
         f"{DDP} {LONG} --out $W/d", ends_in_time, action=fx.Action("d/checkpoint.pt", signal.SIGSTOP, "rank1"),
         timeout=420.0),
    Case("ddp-kill-rank1", 2, "DDP: rank 1 SIGKILLed mid-run", f"{DDP} {LONG} --out $W/d",
         ends_in_time, action=fx.Action("d/checkpoint.pt", signal.SIGKILL, "rank1")),
    Case("ddp-sigterm", 2, "DDP: SIGTERM to torchrun mid-run", f"{DDP} {LONG} --out $W/d",
         ends_in_time, action=fx.Action("d/checkpoint.pt", signal.SIGTERM, "main")),
    Case("ddp-out-below-file", 2, "DDP: rank 0 cannot write --out", f"{DDP} --out $F/afile/run", ends_in_time),
    Case("ddp-nan", 2, "DDP: the loss becomes NaN", f"{DDP} --lr 1e6 --epochs 2 --limit-train 512 --out $W/d",
         ends_in_time),
    Case("ddp-write-fails", 2, "DDP: rank 0's checkpoint write fails (disk full)", f"{DDP} --out $W/d",
         ends_in_time, fsize=FULL_DISK),
    Case("ddp-odd-batch", 2, "DDP: batch size not divisible by 2 ranks", f"{DDP} --batch-size 15 --out $W/d",
         ends_in_time),
    # 3. one clear line, exit 2, never a traceback
    um("train-out-file", 3, "--out is a file", f"{T} --out $F/afile"),
    um("train-out-below-file", 3, "--out below a file", f"{T} --out $F/afile/run"),
    um("train-out-unwritable", 3, "--out where nothing can be written", f"{T} --out /proc/locallearn-run"),
    um("export-out-dir", 3, "export --out is an existing directory", f"{EXPORT} $F/run_dgl --out $W"),
    um("export-out-below-file", 3, "export --out below a file", f"{EXPORT} $F/run_dgl --out $F/afile/m.safetensors"),
    um("export-out-unwritable", 3, "export --out where nothing can be written",
       f"{EXPORT} $F/run_dgl --out /proc/m.safetensors"),
    um("eval-json-disk-full", 3, "eval --heads --json onto a full disk",
       f"{EVAL} $F/run_dgl --heads --json /dev/full"),
    um("bench-json-below-file", 3, "bench --json below a file", f"{BENCH} --repeats 1 --json $F/afile/b.json"),
    Case("checkpoint-write-fails", 3, "the checkpoint write fails (disk full)", f"{T} --out $W/run",
         all_of(user_mistake, no_temp_files("run")), fsize=FULL_DISK),
    um("eval-run-missing", 3, "eval a run dir that does not exist", f"{EVAL} $W/nope"),
    um("eval-run-file", 3, "eval --run names a file", f"{EVAL} $F/run_dgl/checkpoint.pt"),
    um("eval-no-config", 3, "eval a run dir without config.json", f"{EVAL} $W/run",
       prep=RUN + (fx.remove("run/config.json"),)),
    um("eval-no-checkpoint", 3, "eval a run dir without checkpoint.pt", f"{EVAL} $W/run",
       prep=RUN + (fx.remove("run/checkpoint.pt"),)),
    um("eval-config-not-json", 3, "eval a run whose config.json is not JSON", f"{EVAL} $W/run",
       prep=RUN + (fx.write("run/config.json", b"{not json"),)),
    um("eval-config-unknown-model", 3, "eval a run whose config names an unknown model", f"{EVAL} $W/run",
       prep=RUN + (fx.edit_config("run", model="resnet99"),)),
    um("eval-config-bad-value", 3, "eval a run whose config has blocks: \"two\"", f"{EVAL} $W/run",
       prep=RUN + (fx.edit_config("run", blocks="two"),)),
    um("resume-missing", 3, "--resume of a dir that does not exist", "locallearn train --resume --out $W/nope"),
    # a run killed before its first checkpoint: --resume starts it over from its config.json
    Case("resume-no-checkpoint", 3, "--resume of a run without checkpoint.pt restarts it from its config",
         "locallearn train --resume --out $W/run", succeeds, RUN + (fx.remove("run/checkpoint.pt"),)),
    *(um(f"eval-ckpt-other-{k}", 3, f"eval a checkpoint of another {k}", f"{EVAL} $W/run",
         prep=(fx.mixed_run("run_dgl", r),))
      for k, r in (("model", "run_r32"), ("method", "run_manpp"), ("K", "run_k3"), ("channels", "run_c3"))),
    um("resume-ckpt-other-K", 3, "--resume with a checkpoint of another K", "locallearn train --resume --out $W/run",
       prep=(fx.mixed_run("run_dgl", "run_k3"),)),
    um("export-ckpt-other-method", 3, "export a checkpoint of another method",
       f"{EXPORT} $W/run --out $W/m.safetensors", prep=(fx.mixed_run("run_dgl", "run_manpp"),)),
    um("eval-ckpt-garbage", 3, "eval a corrupt checkpoint", f"{EVAL} $W/run", CORRUPT,
       prep=RUN + (fx.write("run/checkpoint.pt", b"garbage" * 100),)),
    um("eval-ckpt-truncated", 3, "eval a truncated checkpoint", f"{EVAL} $W/run", CORRUPT,
       prep=RUN + (fx.truncate("run/checkpoint.pt", 0.5),)),
    um("eval-ckpt-empty", 3, "eval a 0-byte checkpoint", f"{EVAL} $W/run", CORRUPT,
       prep=RUN + (fx.write("run/checkpoint.pt", b""),)),
    um("resume-ckpt-truncated", 3, "--resume from a truncated checkpoint", "locallearn train --resume --out $W/run",
       CORRUPT, prep=RUN + (fx.truncate("run/checkpoint.pt", 0.9),)),
    um("folder-truncated-image", 3, "imagefolder with a truncated PNG",
       f"{T} {FOLDER} --data-dir $F/folder_trunc --out $W/run", mentions("b1.png")),
    um("folder-not-an-image", 3, "imagefolder with a .png that is text",
       f"{T} {FOLDER} --data-dir $F/folder_garbage --out $W/run", mentions("a2.png")),
    um("folder-missing", 3, "imagefolder dir that does not exist", f"{T} {FOLDER} --data-dir $W/nope --out $W/run"),
    um("image-size-negative", 3, "--image-size -5",
       f"{T} {FOLDER} --data-dir $F/folder4 --image-size -5 --out $W/run"),
    um("momentum-0-nesterov", 3, "--momentum 0 (Nesterov is on)", f"{T} --momentum 0 --out $W/run"),
    # not a mistake: the combination is valid and must train (it used to crash)
    Case("lb-channel-bf16", 3, "--lb channel --amp bf16 with MAN++ trains",
         f"{T} --method dgl+manpp --lb channel --amp bf16 --out $W/run", succeeds),
    um("amp-fp16-cpu", 3, "--amp fp16 on a CPU", f"{T} --amp fp16 --out $W/run"),
    *(um(f"{opt[2:]}={v.replace(',', '_')}", 3, f"{opt} {v}", f"{T} {opt} {v} --out $W/run") for opt, v in (
        ("--lr", "-1"), ("--momentum", "1.5"), ("--weight-decay", "-1"), ("--epochs", "0"), ("--batch-size", "0"),
        ("--batch-size", "1000"), ("--warmup-epochs", "-1"), ("--ema-momentum", "1.5"), ("--blocks", "0"),
        ("--blocks", "100"), ("--boundaries", "5,2"), ("--model", "resnet99"), ("--method", "dgl+mann"),
        ("--dataset", "cifar100"), ("--device", "cuda:7"), ("--head-opt", "nosuch=1"))),
    um("boundaries-vs-blocks", 3, "--blocks 3 with one boundary", f"{T} --blocks 3 --boundaries 4 --out $W/run"),
    um("method-without-blocks", 3, "a local method without --blocks", f"{B} --method dgl --out $W/run"),
    um("ddp-without-torchrun", 3, "--ddp without torchrun", f"{T} --ddp --out $W/run"),
    um("fmnist-dir-missing", 3, "--data-dir that does not exist",
       f"{T} --dataset fashion-mnist --data-dir $W/nope --out $W/run", no_network),
    um("fmnist-dir-file", 3, "--data-dir that is a file",
       f"{T} --dataset fashion-mnist --data-dir $F/afile --out $W/run", no_network),
    um("fmnist-truncated-idx", 3, "a truncated IDX label file",
       f"{T} --dataset fashion-mnist --data-dir $F/fmnist_trunc --out $W/run"),
    um("bench-mode", 3, "bench with an unknown mode", "locallearn bench memroy --model resnet20 --image-size 8"),
    *(um(f"bench-{opt[2:]}={v}", 3, f"bench {opt} {v}", f"{BENCH} --repeats 1 --warmup 0 {opt} {v}")
      for opt, v in (("--blocks", "0"), ("--image-size", "0"), ("--repeats", "0"))),
    um("no-command", 3, "locallearn without a command", "locallearn"),
    # 4. never accept silently what is wrong
    *(Case(f"nan-loss{tag}", 4, f"--lr 1e6: the loss becomes NaN{tag and ' (MAN++)'}",
           f"{T}{extra} --lr 1e6 --epochs 2 --limit-train 512 --out $W/run",
           all_of(stops_on_nan, valid_config("run/config.json")))
      for tag, extra in (("", ""), ("-manpp", " --method dgl+manpp"))),
    *(um(f"nan-{opt[2:]}={v}", 4, f"{opt} {v}", f"{T} {opt} {v} --out $W/run", valid_config("run/config.json"))
      for opt, v in (("--lr", "nan"), ("--lr", "inf"), ("--weight-decay", "inf"), ("--ema-momentum", "nan"),
                     ("--warmup-epochs", "nan"))),
    um("one-class-synthetic", 4, "a synthetic dataset with one class",
       f"{T} --dataset synthetic:1x8x8:1 --out $W/run"),
    um("one-class-folder", 4, "an imagefolder with one class", f"{T} {FOLDER} --data-dir $F/folder1 --out $W/run"),
    um("idx-label-12", 4, "an IDX label 12 in a 10-class dataset",
       f"{T} --dataset fashion-mnist --data-dir $F/fmnist_label12 --out $W/run"),
    um("image-size-0", 4, "--image-size 0", f"{T} {FOLDER} --data-dir $F/folder4 --image-size 0 --out $W/run"),
    um("head-opt-bad-value", 4, "--head-opt loss=bogus", f"{T} --method infopro --head-opt loss=bogus --out $W/run"),
    Case("boundaries-alone", 4, "--boundaries alone implies K", f"{B} --method dgl --boundaries 3 --out $W/run",
         prints('"blocks": 2')),
    *(Case(f"ignored-{opt[2:]}", 4, f"{opt} that cannot apply", cmd, refused_or_warned(*words))
      for opt, cmd, words in (
        ("--blocks", f"{T} --method e2e --out $W/run", ("blocks",)),
        ("--boundaries", f"{B} --method e2e --boundaries 3 --out $W/run", ("boundaries",)),
        ("--head-opt", f"{B} --method e2e --head-opt loss=ce --out $W/run", ("head",)),
        ("--recompute", f"{T} --recompute --out $W/run", ("recompute",)),
        ("--lb", f"{T} --lb channel --out $W/run", ("lb",)),
        ("--ema-momentum", f"{T} --ema-momentum 0.9 --out $W/run", ("ema",)),
        ("--bridge-init", f"{T} --bridge-init random --out $W/run", ("bridge",)),
        ("--data-dir", f"{T} --data-dir $W --out $W/run", ("data-dir", "data_dir")),
        ("--download", f"{T} --download --out $W/run", ("download",)),
        ("--json", f"{EVAL} $F/run_dgl --json $W/h.json", ("json",)))),
    Case("resume-new-options", 4, "--resume with other options says they are ignored",
         "locallearn train --resume --out $W/run --lr 0.5", refused_or_warned("ignor"), RUN),
    *(Case(f"no-download-{name}", 4, f"missing {name} without --download: no network",
           f"{T} --dataset {name} --out $W/run", all_of(no_network, user_mistake), hide=(DEBIAN_FMNIST,))
      for name in ("fashion-mnist", "cifar10")),
    Case("no-download-demo", 4, "the demo without Fashion-MNIST: no network",
         "locallearn demo --epochs 1 --limit-train 64 --limit-test 32 --device cpu --no-progress --out $W/demo",
         all_of(no_network, user_mistake), hide=(DEBIAN_FMNIST,)),
    um("download-offline", 4, "--download with no network: one line",
       f"{T} --dataset cifar10 --download --data-dir $W/c10 --out $W/run"),
    # 5. runs that can be rebuilt exactly
    Case("config-json-valid", 5, "config.json is strict JSON", f"{T} --out $W/run",
         all_of(succeeds, valid_config("run/config.json"))),
    Case("config-resolved", 5, "config.json holds the version and resolved head options", f"{T} --out $W/run",
         config_resolved),
    *(Case(f"resume-exact{tag}", 5, f"SIGKILL mid-epoch, --resume: same metrics as uninterrupted{tag}",
           f"{T}{extra} {KILLED} --out $W/a ;; locallearn train --resume --out $W/a ;; "
           f"{T}{extra} {KILLED} --out $W/b",
           same_metrics("a", "b"), action=fx.Action("a/checkpoint.pt", signal.SIGKILL, delay=0.0))
      for tag, extra in (("", ""), ("-folder", f" {FOLDER} --data-dir $F/folder4"))),
    Case("limit-train-stratified", 5, "--limit-train 4 on 4 imagefolder classes takes every class",
         py("from locallearn.data import load_dataset; d = load_dataset('imagefolder', data_dir='$F/folder4', "
            "limit_train=4, image_size=8); print(sorted({int(d.train[i][1]) for i in range(len(d.train))}))"),
         stdout_is("[0, 1, 2, 3]")),
    Case("no-augment-folder", 5, "imagefolder without augmentation gives the same images for any seed",
         py("import torch; from locallearn.data import load_dataset; "
            "d = load_dataset('imagefolder', data_dir='$F/folder2x1', image_size=8); "
            "b = lambda s: (lambda x, y: x[y.argsort()])(*next(iter(d.train_batches(2, "
            "torch.Generator().manual_seed(s), torch.device('cpu'), augment=False)))); "
            "print(torch.equal(b(0), b(1)))"),
         stdout_is("True")),
    Case("eval-run", 5, "eval of a finished run", f"{EVAL} $F/run_dgl", succeeds),
    Case("export-load", 5, "export, then load_backbone", f"{EXPORT} $F/run_dgl --out $W/m.safetensors ;; "
         + py(LB + "print(type(load_backbone('$W/m.safetensors')).__name__)"), succeeds),
    # 6. the Python API
    api("api-localnet-none", "LocalNet(None, ...)", "from locallearn import LocalNet; LocalNet(None, 2, 'dgl')",
        "model"),
    api("api-localnet-method-none", "LocalNet(method=None)", NET + "LocalNet(m, 2, None)", "method"),
    api("api-localnet-blocks-0", "LocalNet(blocks=0)", NET + "LocalNet(m, 0, 'dgl')", "blocks", "K"),
    api("api-localnet-int-size", "LocalNet(image_size=8): works or names image_size",
        NET + "print(LocalNet(m, 2, 'dgl+manpp', image_size=8).train_step(x, y))", "image_size", may_work=True),
    api("api-create-none", "create_model(None)", CM + "create_model(None)", "model", "name"),
    api("api-create-classes-0", "create_model(num_classes=0)", CM + "create_model('resnet20', num_classes=0)",
        "num_classes"),
    api("api-create-chans-0", "create_model(in_chans=0)", CM + "create_model('resnet20', in_chans=0)", "in_chans"),
    api("api-wrap-method-none", "wrap(model, method=None)", TV + "locallearn.wrap(r18, method=None, image_size=32)",
        "method"),
    api("api-wrap-size-str", "wrap(image_size='x')", TV + "locallearn.wrap(r18, image_size='x')", "image_size"),
    api("api-wrap-blocks-0", "wrap(blocks=0)", TV + "locallearn.wrap(r18, blocks=0, image_size=32)", "blocks", "K"),
    api("api-step-empty", "train_step on an empty batch", NET + "print(net.train_step(x[:0], y[:0]))",
        "x", "batch", "empty"),
    api("api-step-uint8", "train_step on a uint8 batch",
        NET + "print(net.train_step((x * 50).clamp(0, 255).to(torch.uint8), y))", "x", "uint8", "dtype"),
    api("api-step-label-range", "train_step with a label >= num_classes", NET + "print(net.train_step(x, y + 10))",
        "y", "label", "labels", "target"),
    api("api-step-channels", "train_step with 3 channels for a 1-channel model",
        NET + "print(net.train_step(torch.randn(16, 3, 8, 8), y))", "x", "channels", "in_chans"),
    api("api-step-mismatch", "train_step with 16 images and 8 labels", NET + "print(net.train_step(x, y[:8]))",
        "x", "y", "labels", "images"),
    api("api-load-checkpoint", "load_backbone(checkpoint.pt)", LB + "load_backbone('$F/run_dgl/checkpoint.pt')",
        "checkpoint", "safetensors", "export"),
    api("api-load-missing", "load_backbone(a missing file)", LB + "load_backbone('$F/nonexistent.safetensors')",
        "nonexistent.safetensors", "path"),
    api("api-load-text", "load_backbone(a text file)", LB + "load_backbone('$F/afile')", "afile", "safetensors"),
]
