#!/usr/bin/env bash
# A few seconds per path that only a CUDA GPU exercises (fp16 autocast with GradScaler
# and per-block optimizers, bf16, --recompute, NCCL data parallel through torchrun):
# each trains ResNet-20 two short epochs on synthetic data and must end with a finite loss.
#   bash benchmarks/gpu_smoke.sh [OUT_DIR]     (DEVICE=cpu: the same runs on the CPU, fp16 fails)
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
out=${1:-/tmp/locallearn_gpu_smoke}
common=(--model resnet20 --dataset synthetic:1x28x28:10 --epochs 2 --limit-train 2048
        --limit-test 512 --batch-size 128 --device "${DEVICE:-cuda}")
fail=0
run() {  # NAME ARGS...: train, then check the summary
    local name=$1; shift
    rm -rf "$out/$name"
    if "$@" --out "$out/$name" >"$out/$name.log" 2>&1 && python3 - "$out/$name" <<'PY'
import csv, json, math, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
losses = [float(r["train_loss"]) for r in csv.DictReader(open(sys.argv[1] + "/metrics.csv"))]
assert len(losses) == s["epochs"] and all(map(math.isfinite, losses)), losses
print(f"  {s['device']}: train loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
      f"test acc {s['final_test_acc']:.3f}, {s['sec_per_step']:.3f} s/step")
PY
    then echo "ok   $name"; else echo "FAIL $name"; tail -5 "$out/$name.log"; fail=1; fi
}
mkdir -p "$out"
run e2e_fp16 python3 -m locallearn train "${common[@]}" --method e2e --amp fp16
run dgl_manpp_fp16 python3 -m locallearn train "${common[@]}" --method dgl+manpp --blocks 4 --amp fp16
run infopro_manpp_bf16 python3 -m locallearn train "${common[@]}" --method infopro+manpp --blocks 4 --amp bf16
run infopro_manpp_recompute python3 -m locallearn train "${common[@]}" --method infopro+manpp --blocks 4 --recompute
run predsim_ddp_nccl torchrun --standalone --nproc-per-node 1 -m locallearn train "${common[@]}" --method predsim --blocks 4 --ddp
exit $fail
