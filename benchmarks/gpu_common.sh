# Sourced by the GPU sitting scripts (gpu_checks.sh, gpu_fidelity.sh): go to the
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
