#!/usr/bin/env bash
# Creates .venv and installs mrcnn_edu into it (editable), with the test tools when called with "test".
# PyTorch is installed first and chosen for the machine: a CUDA build only where nvidia-smi sees a GPU,
# a CPU build everywhere else, so a CPU machine never downloads CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=${1:-}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found, installing the default (CUDA) PyTorch build"
    "${pip[@]}" torch
  else
    echo "setup: no GPU, installing a CPU build of PyTorch"
    # A local or mirrored CPU wheel (pip's find-links) is tried first; then PyTorch's CPU wheel index.
    "${pip[@]}" "torch==2.13.0+cpu" 2>/dev/null || "${pip[@]}" "torch==2.13.0" 2>/dev/null \
      || "${pip[@]}" torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi

if [ "$extra" = "test" ]; then
  "${pip[@]}" -e ".[test]"
else
  "${pip[@]}" -e .
fi
.venv/bin/python -c "import torch, mrcnn_edu; print('setup: torch', torch.__version__, '| mrcnn_edu', mrcnn_edu.__version__)"
