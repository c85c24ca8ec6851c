#!/usr/bin/env bash
# Create ./.venv (if missing) and install the package with every extra.
# torch is pinned to the CPU build 2.13.0 here only: the package itself accepts torch>=2.1,
# so users on GPUs bring their own build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
pip install --quiet --disable-pip-version-check -e ".[dev]"
