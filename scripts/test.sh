#!/usr/bin/env bash
# Install darkroom with its test dependencies into .venv (created on first use),
# lint, type-check and run the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/api -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh '.[api,worker,ui,test,embedded]'

python -m ruff check .
python -m mypy
python -m pytest "$@"
