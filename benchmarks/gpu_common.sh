# Sourced by the GPU sitting scripts (gpu_checks.sh, gpu_fidelity.sh, gpu_bench.sh): go to the
# repository root, refuse a machine whose python3 sees no CUDA GPU (exit 2), make OUT,
# set the environment, and log what the machine is. Expects $out set; sets t0 and log.
#   gpu_preamble SCRIPT_NAME
gpu_preamble() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
    if ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
        echo "$1: python3 sees no CUDA GPU (or no torch); this sitting needs one" >&2
        exit 2
    fi
    mkdir -p "$out"
    export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
    export LOCALLEARN_DATA=${LOCALLEARN_DATA:-$PWD/.gpudata}
    t0=$SECONDS
    log="$out/log.txt"
    { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
      python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision',
torchvision.__version__, torch.cuda.get_device_name(), torch.cuda.is_available())"
      echo "CPU cores: $(nproc)"; } 2>&1 | tee "$log"
}

# Start CUDA MPS (several trainers share the GPU at once) when the machine allows it,
# checked with a tiny CUDA call; returns 1 (and leaves MPS off) otherwise.
gpu_mps_on() {
    command -v nvidia-cuda-mps-control >/dev/null || return 1
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d 2>>"$log" && timeout 60 python3 -c \
        "import torch; x = torch.ones(4, device='cuda'); assert float(x.sum()) == 4" 2>>"$log"; then
        return 0
    fi
    echo quit | nvidia-cuda-mps-control 2>/dev/null
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    return 1
}

gpu_mps_off() {
    if command -v nvidia-cuda-mps-control >/dev/null && [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ]; then
        echo quit | nvidia-cuda-mps-control 2>/dev/null
    fi
}

# Wait until STOP_AT seconds after t0 or until every process group PGID has ended, then
# SIGTERM the groups (a trainer checkpoints after its current step and exits), give them
# 20 s, and SIGKILL what is left.
#   gpu_stop_pools STOP_AT PGID [PGID ...]
gpu_stop_pools() {
    local stop_at=$1; shift
    local pg alive
    while (( SECONDS - t0 < stop_at )); do
        alive=0
        for pg in "$@"; do kill -0 "$pg" 2>/dev/null && alive=1; done
        (( alive )) || return 0
        sleep 5
    done
    say "stopping the trainers"
    for pg in "$@"; do kill -TERM -- -"$pg" 2>/dev/null; done
    for _ in $(seq 20); do
        alive=0
        for pg in "$@"; do kill -0 "$pg" 2>/dev/null && alive=1; done
        (( alive )) || return 0
        sleep 1
    done
    for pg in "$@"; do kill -KILL -- -"$pg" 2>/dev/null; done
}

say() { echo "== [$((SECONDS - t0)) s] $*" | tee -a "$log"; }

# The GPU's utilisation and memory every 10 s into OUT/gpu_util.csv, until gpu_util_stop.
gpu_util_log() {
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 10 \
        >"$out/gpu_util.csv" 2>/dev/null &
    smi=$!
}

gpu_util_stop() { kill "${smi:-0}" 2>/dev/null; }
