#!/usr/bin/env bash
# The main job of the README: install, then reproduce the paper's experiments on small
# defaults (tables on stdout, PNG plots under results/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
manifold-spectral reproduce all --out results "$@"
