#!/usr/bin/env bash
# The training runs of one bench script on one CUDA GPU, in one sitting of at most SECONDS
# (default 540), for the benchmarks whose CPU runs take hours (issue 16's 24 detection
# runs: 30-160 min each on one CPU thread):
#  - BENCH is detection, sr or analysis: `benchmarks/bench_BENCH.py train --device cuda`
#    with WORKERS trainers (default 6 under CUDA MPS, 3 without) that share the run list
#    through claim files and skip what results/ already holds (the CPU runs included);
#  - SIGTERM to the trainers 60 s before the deadline (each checkpoints and exits; an
#    unfinished run restarts in a later sitting, its checkpoint is left behind), then
#    `analyze` (analysis only, if time is left) and the bench's table;
#  - OUT_DIR/results.tgz holds benchmarks/results/ without checkpoints: untar it in the
#    repository root, then run benchmarks/write_benchmarks.py. Each run's segments.json
#    says where it trained.
# Needs a python3 holding torch, torchvision, torchmetrics, faster-coco-eval, tqdm and
# matplotlib; Fashion-MNIST from $LOCALLEARN_DATA (default: .gpudata/ in the repository).
#   bash benchmarks/gpu_bench.sh OUT_DIR BENCH [SECONDS] [WORKERS]
set -u -o pipefail
usage="usage: bash benchmarks/gpu_bench.sh OUT_DIR detection|sr|analysis [SECONDS] [WORKERS]"
out=$(realpath -m "${1:?$usage}")
bench=${2:?$usage}
budget=${3:-540}
case "$bench" in
    detection|sr|analysis) ;;
    *) echo "gpu_bench.sh: unknown bench '$bench' (allowed: detection, sr, analysis)" >&2; exit 2;;
esac
source "$(dirname "$0")/gpu_common.sh"
gpu_preamble gpu_bench.sh
gpu_util_log
if gpu_mps_on; then
    workers=${4:-6}
    say "MPS on"
else
    workers=${4:-3}
    say "MPS unavailable: time-sliced trainers"
fi
say "bench_$bench.py train, $workers trainers"
setsid python3 "benchmarks/bench_$bench.py" train --device cuda --workers "$workers" \
    >"$out/train.log" 2>&1 &
gpu_stop_pools $((budget - 60)) $!
grep -h "^==\|Error\|error" "$out/train.log" | tail -40 | tee -a "$log"
if [ "$bench" = analysis ] && (( budget - (SECONDS - t0) > 90 )); then
    say "analyze"
    timeout $((budget - (SECONDS - t0) - 40)) python3 benchmarks/bench_analysis.py analyze \
        --device cuda >"$out/analyze.log" 2>&1
fi
python3 "benchmarks/bench_$bench.py" table >>"$log" 2>&1
gpu_util_stop
gpu_mps_off
tar czf "$out/results.tgz" --exclude=checkpoint.pt --exclude='*.tmp' benchmarks/results \
    2>>"$log"
ls -la "$out" | tee -a "$log"
say "end"
