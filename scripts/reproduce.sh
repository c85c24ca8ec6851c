#!/usr/bin/env bash
# The main job of the README: install, then reproduce the paper's experiments on small
# defaults (tables on stdout, PNG plots under the repository's results/). Arguments go to
# `manifold-spectral reproduce all`; a relative --out is relative to where this was run.
set -euo pipefail
here="$PWD"
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh
. .venv/bin/activate
cd "$here"
manifold-spectral reproduce all --out "$repo/results" "$@"
