#!/usr/bin/env bash
# Creates .venv and installs mrcnn_edu into it (editable), with the test tools when called with "test", with the
# course book's tools when called with "book".
#
# PyTorch comes first, chosen for the machine, and pinned to one release (TORCH) on every path:
# - Linux without a GPU: PyTorch's CPU wheel index first (the default package index's Linux torch is the CUDA
#   build: a 500 MB wheel plus several GB of nvidia-* packages, useless there); a wheel in pip's find-links
#   (a local or mirrored copy) may still be taken. If that index cannot be reached, the configured index.
# - Linux with a GPU (nvidia-smi sees one): the default index's CUDA build of the same release.
# - macOS and others: the default index (its torch is the CPU / Metal build there).
# pip prints what it downloads: a multi-GB download is never silent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extra=${1:-}
TORCH=2.13.0
CPU_INDEX=https://download.pytorch.org/whl/cpu

say() { printf 'setup: %s\n' "$*"; }

# A .venv without pip is half made: Debian and Ubuntu ship venv's pip bootstrap in a separate package.
if [ -d .venv ] && ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  say ".venv exists but has no working pip (a half-made virtual environment)."
  say "On Debian/Ubuntu install the venv module first: sudo apt install python3-venv (or python3.X-venv),"
  say "then remove the folder and run this again: rm -rf .venv"
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv; then
    rm -rf .venv
    say "could not create .venv with $PY -m venv (on Debian/Ubuntu: sudo apt install python3-venv)"
    exit 2
  fi
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check)

reachable() {  # an HTTPS URL answers within 10 s
  .venv/bin/python - "$1" <<'PYCODE' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=10)
PYCODE
}

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  os=$(uname -s)
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    say "GPU found: installing PyTorch $TORCH, the CUDA build (several GB with its nvidia-* packages)"
    "${pip[@]}" "torch==$TORCH"
  elif [ "$os" = Linux ]; then
    if reachable "$CPU_INDEX/"; then
      say "no GPU: installing PyTorch $TORCH, the CPU build, from PyTorch's CPU index ($CPU_INDEX)"
      "${pip[@]}" "torch==$TORCH" --index-url "$CPU_INDEX"
    else
      say "no GPU, and PyTorch's CPU index ($CPU_INDEX) cannot be reached: installing torch==$TORCH from"
      say "the configured package index (a local wheel or mirror; on plain PyPI this is the CUDA build)"
      "${pip[@]}" "torch==$TORCH"
    fi
  else
    say "installing PyTorch $TORCH from the default index ($os)"
    "${pip[@]}" "torch==$TORCH"
  fi
fi

if [ "$extra" = "test" ]; then
  say "installing mrcnn_edu (editable) with the test tools"
  "${pip[@]}" -q -e ".[test]"
  # torchvision is a test reference only (mrcnn_edu never imports it for its own work). Its Python code
  # is installed without dependencies, at the release paired with the installed torch (torch 2.N pairs
  # with torchvision 0.(N+15)), so no other torch can be pulled in. Where its compiled ops do not load
  # (no CPU build here), mrcnn_edu.references.import_torchvision puts onnxruntime kernels behind them.
  if ! .venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torchvision') is None)"; then
    tv=$(.venv/bin/python -c "import torch; m = int(torch.__version__.split('.')[1]); print(f'0.{m + 15}.*')")
    "${pip[@]}" -q --no-deps "torchvision==$tv" \
      || say "torchvision $tv not installed; the torchvision parity tests will skip"
  fi
elif [ "$extra" = "book" ]; then
  say "installing mrcnn_edu (editable) with the course book's tools (Sphinx, myst-nb, sphinx-book-theme)"
  "${pip[@]}" -q -e ".[book]"
else
  say "installing mrcnn_edu (editable)"
  "${pip[@]}" -q -e .
fi
.venv/bin/python -c "import torch, mrcnn_edu; print('setup: torch', torch.__version__, '| mrcnn_edu', mrcnn_edu.__version__)"
