#!/usr/bin/env bash
# Issue 4's checks that need a CUDA GPU, in one sitting of at most SECONDS (default 480):
#  1. the step-memory meter against torch.cuda.max_memory_allocated (crosscheck_memory.py);
#  2. the plateau budget's seed SEED (default 1: E2E, DGL, DGL+MAN++, three trainers sharing
#     the GPU), killed at the deadline (a killed run resumes from its last epoch on any
#     device; reproduce.py records where each part trained in segments.json);
#  3. if time is left, ResNet-32/110 step timings on the GPU (bench_steps.py), alone.
# Everything worth keeping lands in OUT_DIR (at most 8 files): copy the sections/JSON into
# benchmarks/results/, untar plateau.tgz in the repository root, then run
# benchmarks/write_benchmarks.py. Needs a python3 holding torch, torchvision, tqdm and
# matplotlib; Fashion-MNIST from $LOCALLEARN_DATA (default: .gpudata/ in the repository) or
# the Debian package's folder.
#   bash benchmarks/gpu_checks.sh OUT_DIR [SECONDS] [SEED]
set -u -o pipefail
out=$(realpath -m "${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR [SECONDS] [SEED]}")
budget=${2:-480}
seed=${3:-1}
source "$(dirname "$0")/gpu_common.sh"
gpu_preamble gpu_checks.sh
left() { echo $((budget - (SECONDS - t0))); }

echo "== [$((SECONDS - t0)) s] memory cross-check" | tee -a "$log"
timeout 150 python3 benchmarks/crosscheck_memory.py --device cuda --results "$out" 2>&1 | tee -a "$log"
cat "$out/section_memory_crosscheck_cuda.md" 2>/dev/null | tee -a "$log"

# the trainers stop 60 s before the deadline, leaving time to pack their runs
echo "== [$((SECONDS - t0)) s] plateau seed $seed, $(( $(left) - 60 )) s" | tee -a "$log"
timeout $(( $(left) - 60 )) python3 benchmarks/reproduce.py --budget plateau --device cuda \
    --seeds "$seed" --workers 3 >"$out/train.log" 2>&1
echo "== [$((SECONDS - t0)) s] trainers done (rc $?)" | tee -a "$log"
grep -h "^==\|Error\|error" "$out/train.log" | tail -20 | tee -a "$log"
# checkpoints stay behind (DGL's is ~80 MB; the per-block accuracy is in heads.json)
tar czf "$out/plateau.tgz" --exclude=checkpoint.pt benchmarks/results/reproduce/plateau \
    benchmarks/results/section_reproduce_plateau.md benchmarks/results/reproduce_plateau.png \
    benchmarks/results/layerwise_plateau.png runs/reproduce/plateau 2>>"$log"
ls -la "$out" | tee -a "$log"

if (( $(left) > 60 )); then
    echo "== [$((SECONDS - t0)) s] step timings, $(( $(left) - 10 )) s" | tee -a "$log"
    timeout $(( $(left) - 10 )) python3 benchmarks/bench_steps.py --device cuda --results "$out" \
        2>&1 | tee -a "$log"
fi
echo "== [$((SECONDS - t0)) s] end" | tee -a "$log"
