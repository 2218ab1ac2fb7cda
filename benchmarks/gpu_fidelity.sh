#!/usr/bin/env bash
# Issue 15's plateau-budget runs (and issue 14's last slm seeds) on one CUDA GPU, in one
# sitting of at most SECONDS (default 540):
#  - CUDA MPS when the machine allows it, so that many small trainers share the SMs
#    (checked with a tiny CUDA call; without it fewer trainers run, since time-sliced
#    trainers of this size saturate the GPU at about six);
#  - pool A: `reproduce.py --budget plateau` (PLAN order: DGL+MAN++ under the reference
#    preset for seeds 0-2, DGL under it, then each preset detail alone);
#  - pool B: `reproduce.py --budget short` (the slm rows' seeds still missing);
#  - SIGTERM to every trainer 50 s before the deadline (a trainer checkpoints and exits;
#    a run that did not finish is retrained by a later sitting: its checkpoint is too
#    large to bring back), then everything worth keeping is packed into OUT_DIR:
#    results.tgz (untar in the repository root, then run benchmarks/write_benchmarks.py),
#    the logs and the GPU's utilisation every 10 s.
# Needs a python3 holding torch, torchvision, tqdm and matplotlib; Fashion-MNIST from
# $LOCALLEARN_DATA (default: .gpudata/ in the repository) or the Debian package's folder.
#   bash benchmarks/gpu_fidelity.sh OUT_DIR [SECONDS]
set -u -o pipefail
out=$(realpath -m "${1:?usage: bash benchmarks/gpu_fidelity.sh OUT_DIR [SECONDS]}")
budget=${2:-540}
cd "$(dirname "$0")/.."
if ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "gpu_fidelity.sh: python3 sees no CUDA GPU (or no torch); these runs need one" >&2
    exit 2
fi
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
export LOCALLEARN_DATA=${LOCALLEARN_DATA:-$PWD/.gpudata}
t0=$SECONDS
log="$out/log.txt"
say() { echo "== [$((SECONDS - t0)) s] $*" | tee -a "$log"; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, torch.cuda.get_device_name())"; nproc; } 2>&1 | tee -a "$log"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 \
    >"$out/gpu_util.csv" 2>/dev/null &
smi=$!

workers_a=4 workers_b=2
if command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d 2>>"$log" && timeout 60 python3 -c \
        "import torch; x = torch.ones(4, device='cuda'); assert float(x.sum()) == 4" 2>>"$log"; then
        workers_a=7 workers_b=4
        say "MPS on"
    else
        echo quit | nvidia-cuda-mps-control 2>/dev/null
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
        say "MPS unavailable: time-sliced trainers"
    fi
fi

say "pool A: plateau, $workers_a trainers; pool B: short (slm), $workers_b trainers"
setsid python3 benchmarks/reproduce.py --budget plateau --device cuda --workers "$workers_a" \
    >"$out/plateau.log" 2>&1 &
pool_a=$!
setsid python3 benchmarks/reproduce.py --budget short --device cuda --workers "$workers_b" \
    --seeds 1,2 >"$out/short.log" 2>&1 &
pool_b=$!
stop_at=$((budget - 50))
while (( SECONDS - t0 < stop_at )) && { kill -0 $pool_a 2>/dev/null || kill -0 $pool_b 2>/dev/null; }; do
    sleep 5
done
say "stopping the trainers"
for pg in $pool_a $pool_b; do kill -TERM -- -"$pg" 2>/dev/null; done
for _ in $(seq 20); do
    kill -0 $pool_a 2>/dev/null || kill -0 $pool_b 2>/dev/null || break
    sleep 1
done
for pg in $pool_a $pool_b; do kill -KILL -- -"$pg" 2>/dev/null; done
kill $smi 2>/dev/null
grep -h "^==\|Error\|error" "$out/plateau.log" "$out/short.log" | tail -40 | tee -a "$log"
# the tables from what finished (the trainers may have been stopped mid-rewrite)
python3 benchmarks/reproduce.py --budget plateau --table-only >>"$log" 2>&1
python3 benchmarks/reproduce.py --budget short --table-only >>"$log" 2>&1
# finished runs (kept results) and the curves of unfinished ones, without checkpoints
tar czf "$out/results.tgz" --exclude=checkpoint.pt --exclude='*.tmp' \
    benchmarks/results/reproduce/plateau benchmarks/results/reproduce/short \
    benchmarks/results/section_reproduce_plateau.md benchmarks/results/section_reproduce_short.md \
    benchmarks/results/reproduce_plateau.png benchmarks/results/reproduce_short.png \
    benchmarks/results/layerwise_plateau.png benchmarks/results/layerwise_short.png \
    runs/reproduce 2>>"$log"
if command -v nvidia-cuda-mps-control >/dev/null && [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ]; then
    echo quit | nvidia-cuda-mps-control 2>/dev/null
fi
ls -la "$out" | tee -a "$log"
say "end"
