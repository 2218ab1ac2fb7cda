#!/usr/bin/env bash
# Install everything locallearn needs into ./.venv (idempotent), then run a task:
#   scripts/setup.sh demo   -> the short local-learning demo (ResNet-32 on Fashion-MNIST)
#   scripts/setup.sh test   -> the test suite
#   scripts/setup.sh        -> install only
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_PIN="torch==2.14.1 torchvision==0.29.1"   # the tested pair; pyproject keeps ranges loose
PY="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.locallearn-stamp"

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "setup: $PY not found; install Python >= 3.9 (e.g. apt-get install python3 python3-venv)" >&2
  exit 2
fi

want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing into $VENV (torch from the local wheel cache when present) ..."
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV" || {
    echo "setup: could not create a venv; install python3-venv (apt-get install python3-venv)" >&2; exit 2; }
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install -q $TORCH_PIN 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -c "import torch, torchvision" || { echo "setup: installing torch failed" >&2; exit 1; }
  "$VENV/bin/python" -m pip install -q -e ".[test,photos]" 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -c "import locallearn" || { echo "setup: installing locallearn failed" >&2; exit 1; }
  echo "$want" > "$STAMP"
fi

# Fashion-MNIST (real data, the demo's default) from Debian when we can install packages.
FMNIST=/usr/share/datasets/fashion-mnist
need_data() { [ "${1:-}" = demo ] && [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ] && [ -z "${LOCALLEARN_DATA:-}" ]; }
if need_data "${1:-}"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's dataset-fashion-mnist ..."
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
      || echo "setup: apt-get could not install dataset-fashion-mnist; will try a torchvision download" >&2
  else
    echo "setup: Fashion-MNIST not in $FMNIST. Either 'sudo apt-get install dataset-fashion-mnist'," >&2
    echo "       or set LOCALLEARN_DATA to a folder with its IDX files; trying a torchvision download." >&2
  fi
fi

# The tests read a few real files when they are there (skipped otherwise): Debian's
# labelme-examples ships VOC 2011 photos with VOC segmentation masks, boxes and a COCO json.
LABELME=/usr/share/doc/labelme-examples/examples
if [ "${1:-}" = test ] && [ ! -d "$LABELME" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing Debian's labelme-examples (real VOC files for the data tests) ..."
  (apt-get update -qq && apt-get install -y -qq labelme-examples) >/dev/null 2>&1 \
    || echo "setup: apt-get could not install labelme-examples; its tests will be skipped" >&2
fi

case "${1:-}" in
  demo) shift
    # the library never downloads unless asked: ask only when the data is nowhere here
    if need_data demo; then set -- --download "$@"; fi
    exec "$VENV/bin/locallearn" demo "$@" ;;
  # one test process per logical CPU (the tests use one thread each); "-n 0" runs them in one
  test) shift; exec "$VENV/bin/python" -m pytest -q -n logical "$@" ;;
  "") echo "setup: done. Activate with: source $VENV/bin/activate" ;;
  *) echo "setup: unknown task '$1' (choose from: demo, test)" >&2; exit 2 ;;
esac
