#!/usr/bin/env bash
# One epoch of ResNet-32 on the full Fashion-MNIST for e2e, dgl and dgl+manpp (K=16),
# through the real CLI. Resumable: a finished run is skipped, a killed one resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/showcase}
LL=".venv/bin/locallearn"
for m in e2e dgl dgl+manpp; do
  k=16; [ "$m" = e2e ] && k=1
  dir="$OUT/${m/+/_}"
  if [ -f "$dir/checkpoint.pt" ]; then
    $LL train --resume --out "$dir"
  else
    $LL train --model resnet32 --method "$m" --blocks $k --dataset fashion-mnist \
      --epochs 1 --batch-size 128 --lr 0.1 --seed 0 --channels-last --out "$dir"
  fi
done
