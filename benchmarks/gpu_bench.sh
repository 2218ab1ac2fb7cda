#!/usr/bin/env bash
# The training runs of one or more benchmarks on one CUDA GPU, in one sitting of at most
# SECONDS (default 540), for the benchmarks whose CPU runs take hours (issue 16's 24
# detection runs: 30-55 min each on one CPU thread; issue 15's plateau runs: ~90 min):
#  - BENCHES is a comma list of detection, sr, analysis (`benchmarks/bench_NAME.py train
#    --device cuda`) and fidelity (`benchmarks/reproduce.py --budget plateau --device cuda`);
#    the WORKERS trainers (default 6 under CUDA MPS, 3 without) are split evenly between
#    them, one pool per bench. Trainers share a run list through claim files and skip what
#    results/ already holds (the CPU runs included);
#  - SIGTERM to the trainers 60 s before the deadline (each checkpoints and exits; an
#    unfinished run restarts in a later sitting, its checkpoint is left behind), then
#    `analyze` (analysis only, if time is left) and each bench's table;
#  - OUT_DIR/results.tgz holds benchmarks/results/ without checkpoints: untar it in the
#    repository root, then run benchmarks/write_benchmarks.py. Each run's segments.json
#    says where it trained.
# Needs a python3 holding torch, torchvision, torchmetrics, faster-coco-eval, tqdm and
# matplotlib; Fashion-MNIST from $LOCALLEARN_DATA (default: .gpudata/ in the repository).
#   bash benchmarks/gpu_bench.sh OUT_DIR BENCH[,BENCH...] [SECONDS] [WORKERS]
#   e.g. bash benchmarks/gpu_bench.sh "$OUT" detection,fidelity 540 6
set -u -o pipefail
usage="usage: bash benchmarks/gpu_bench.sh OUT_DIR detection|sr|analysis|fidelity[,...] [SECONDS] [WORKERS]"
out=$(realpath -m "${1:?$usage}")
IFS=, read -r -a benches <<<"${2:?$usage}"
budget=${3:-540}
for bench in "${benches[@]}"; do
    case "$bench" in
        detection|sr|analysis|fidelity) ;;
        *) echo "gpu_bench.sh: unknown bench '$bench' (allowed: detection, sr, analysis, fidelity)" >&2
           exit 2;;
    esac
done
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
# cmd = the command line of a bench's train or table step: fidelity is reproduce.py's
# plateau budget, any other bench its own benchmarks/bench_NAME.py
bench_cmd() {
    if [ "$1" = fidelity ]; then
        cmd=(python3 benchmarks/reproduce.py --budget plateau)
        if [ "$2" = table ]; then cmd+=(--table-only); fi
    else
        cmd=(python3 "benchmarks/bench_$1.py" "$2")
    fi
    if [ "$2" = train ]; then cmd+=(--device cuda --workers "$per"); fi
}
per=$(( workers / ${#benches[@]} > 0 ? workers / ${#benches[@]} : 1 ))
pools=()
for bench in "${benches[@]}"; do
    say "$bench: $per trainers"
    bench_cmd "$bench" train
    setsid "${cmd[@]}" >"$out/$bench.log" 2>&1 &
    pools+=($!)
done
gpu_stop_pools $((budget - 60)) "${pools[@]}"
for bench in "${benches[@]}"; do
    grep -h "^==\|Error\|error" "$out/$bench.log" | tail -20 | tee -a "$log"
done
for bench in "${benches[@]}"; do
    if [ "$bench" = analysis ] && (( budget - (SECONDS - t0) > 90 )); then
        say "analyze"
        timeout $((budget - (SECONDS - t0) - 40)) python3 benchmarks/bench_analysis.py analyze \
            --device cuda >"$out/analyze.log" 2>&1
    fi
done
for bench in "${benches[@]}"; do
    bench_cmd "$bench" table
    "${cmd[@]}" >>"$log" 2>&1
done
gpu_util_stop
gpu_mps_off
# parked runs without their checkpoints would be curves that cannot resume: left out
tar czf "$out/results.tgz" --exclude=checkpoint.pt --exclude='*.tmp' \
    --exclude=benchmarks/results/parked benchmarks/results 2>>"$log"
ls -la "$out" | tee -a "$log"
say "end"
