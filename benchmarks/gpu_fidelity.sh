#!/usr/bin/env bash
# Issue 15's plateau-budget runs (and issue 14's last slm seeds) on one CUDA GPU, in one
# sitting of at most SECONDS (default 540):
#  - CUDA MPS when the machine allows it (checked with a tiny CUDA call), WORKERS
#    trainers (default 6; 4 without MPS). Seen on an H100 on 2026-11-26 with MPS: 11
#    trainers kept the GPU 85-100% busy and DGL+MAN++ took ~50 s an epoch, so none of its
#    10-epoch runs ended within 540 s; 3 trainers alone took ~36 s an epoch. Six finish
#    a 10-epoch DGL+MAN++ run (~6-7 min) inside one sitting;
#  - pool A: `reproduce.py --budget BUDGET` (default plateau; PLAN order: DGL+MAN++
#    under the reference preset for seeds 0-2, DGL under it, each preset detail alone
#    for seed 0, the preset and today's MAN++ for seeds 3-10, the details' seeds 1-2,
#    then the ablation; what is kept is skipped; `paper`: the papers' recipe at batch
#    1024, today's rows and the preset's);
#  - pool B: `reproduce.py --budget short` (the slm rows' seeds still missing);
#  - SIGTERM to every trainer 50 s before the deadline (a trainer checkpoints and exits;
#    a run that did not finish is retrained by a later sitting: its checkpoint is too
#    large to bring back), then everything worth keeping is packed into OUT_DIR:
#    results.tgz (untar in the repository root, then run benchmarks/write_benchmarks.py),
#    the logs and the GPU's utilisation every 10 s.
# Needs a python3 holding torch, torchvision, tqdm and matplotlib; Fashion-MNIST from
# $LOCALLEARN_DATA (default: .gpudata/ in the repository) or the Debian package's folder.
#   bash benchmarks/gpu_fidelity.sh OUT_DIR [SECONDS] [WORKERS] [BUDGET]
set -u -o pipefail
out=$(realpath -m "${1:?usage: bash benchmarks/gpu_fidelity.sh OUT_DIR [SECONDS] [WORKERS] [BUDGET]}")
budget=${2:-540}
workers=${3:-6}
plan=${4:-plateau}
source "$(dirname "$0")/gpu_common.sh"
gpu_preamble gpu_fidelity.sh
gpu_util_log

# pool B only while the short budget's slm seeds are missing (one trainer each)
missing=$(python3 - <<'PY'
import sys; sys.path.insert(0, "benchmarks")
import reproduce as r
print(sum(1 for j in r.jobs("short") if j[1].startswith("slm") and not r.finished(*j)))
PY
)
workers_b=$(( missing < 2 ? missing : 2 ))
workers_a=$(( workers < 4 ? workers : 4 ))
if gpu_mps_on; then
    workers_a=$(( workers - workers_b ))
    say "MPS on"
elif command -v nvidia-cuda-mps-control >/dev/null; then
    say "MPS unavailable: time-sliced trainers"
fi

say "pool A: $plan, $workers_a trainers; pool B: short (slm), $workers_b trainers"
setsid python3 benchmarks/reproduce.py --budget "$plan" --device cuda --workers "$workers_a" \
    >"$out/$plan.log" 2>&1 &
pool_a=$!
pool_b=0
if (( workers_b > 0 )); then
    setsid python3 benchmarks/reproduce.py --budget short --device cuda --workers "$workers_b" \
        --seeds 1,2 >"$out/short.log" 2>&1 &
    pool_b=$!
fi
pools="$pool_a$( (( pool_b > 0 )) && echo " $pool_b")"
# shellcheck disable=SC2086
gpu_stop_pools $((budget - 50)) $pools
gpu_util_stop
grep -h "^==\|Error\|error" "$out"/*.log | tail -40 | tee -a "$log"
# the tables from what finished (the trainers may have been stopped mid-rewrite)
python3 benchmarks/reproduce.py --budget "$plan" --table-only >>"$log" 2>&1
python3 benchmarks/reproduce.py --budget short --table-only >>"$log" 2>&1
# finished runs (kept results) and the curves of unfinished ones, without checkpoints
tar czf "$out/results.tgz" --exclude=checkpoint.pt --exclude='*.tmp' \
    benchmarks/results/reproduce/"$plan" benchmarks/results/reproduce/short \
    benchmarks/results/section_reproduce_"$plan".md benchmarks/results/section_reproduce_short.md \
    benchmarks/results/reproduce_"$plan".png benchmarks/results/reproduce_short.png \
    benchmarks/results/layerwise_"$plan".png benchmarks/results/layerwise_short.png \
    runs/reproduce/*/*/metrics.csv runs/reproduce/*/*/config.json \
    runs/reproduce/*/*/segments.json 2>>"$log"
gpu_mps_off
ls -la "$out" | tee -a "$log"
say "end"
