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
  # torchvision is a test reference only (mrcnn_edu never imports it for its own work). Its Python code
  # is installed without dependencies, at the release paired with the installed torch (torch 2.N pairs
  # with torchvision 0.(N+15)), so no other torch can be pulled in. Where its compiled ops do not load
  # (no CPU build here), mrcnn_edu.references.import_torchvision puts onnxruntime kernels behind them.
  if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torchvision') is None)"; then
    tv=$(.venv/bin/python -c "import torch; m = int(torch.__version__.split('.')[1]); print(f'0.{m + 15}.*')")
    "${pip[@]}" --no-deps "torchvision==$tv" \
      || echo "setup: torchvision $tv not installed; the torchvision parity tests will skip"
  fi
else
  "${pip[@]}" -e .
fi
.venv/bin/python -c "import torch, mrcnn_edu; print('setup: torch', torch.__version__, '| mrcnn_edu', mrcnn_edu.__version__)"
