#!/usr/bin/env bash
# Install darkroom with its test dependencies, lint, type-check and run the whole suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/api -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# torch==2.13.0 first: on these machines it is the local CPU build; any other
# spec pulls gigabytes of CUDA wheels.
"$PYTHON" -m pip install --quiet --disable-pip-version-check torch==2.13.0 -e '.[test,embedded]'
"$PYTHON" -m ruff check .
"$PYTHON" -m mypy
"$PYTHON" -m pytest "$@"
