#!/usr/bin/env bash
# The test command of the README: install, lint, build the docs, run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check manifold_spectral tests derivations examples benchmarks
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
python -m pytest -q "$@"
