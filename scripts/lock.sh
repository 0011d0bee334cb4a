#!/usr/bin/env bash
# Re-resolve requirements/lock.txt from pyproject.toml: run this after changing a
# dependency, or to upgrade on purpose (`bash scripts/lock.sh --upgrade`, or
# `--upgrade-package NAME`). Review the diff, run the tests, commit both files.
# torch stays out of the lock: the scripts install it from requirements/torch.txt
# (the CPU build here), and GPU hosts keep their own CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh '.[test,embedded]'

# The lock's header names this script as the way to make it.
export CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh"

python -m piptools compile --quiet --extra test --extra embedded --strip-extras \
  --unsafe-package torch --no-emit-index-url --no-emit-find-links \
  --constraint requirements/torch.txt --output-file requirements/lock.txt "$@" pyproject.toml
