#!/usr/bin/env bash
# Re-resolve requirements/lock.txt from pyproject.toml: run this after changing a
# dependency, or to upgrade on purpose (`bash scripts/lock.sh --upgrade`, or
# `--upgrade-package NAME`). Review the diff, run the tests, commit both files.
#
#   bash scripts/lock.sh            # rewrite requirements/lock.txt
#   bash scripts/lock.sh --check    # CI (.ci/run): fail if the lock is not what
#                                   # pyproject.toml resolves to; changes nothing
#
# One lock for every extra (api, worker, ui, embedded, test): each install takes it as
# constraints (`pip install -c requirements/lock.txt '.[api]'`), so any subset of
# the extras gets the same versions. torch stays out of the lock: the scripts
# install it from requirements/torch.txt (the CPU build here), the worker image
# the CUDA build of the same release.
#
# pip-compile runs from a small venv of its own (pip-tools at the lock's version),
# not from .venv: locking needs neither darkroom nor torch installed.
# DARKROOM_LOCK_VENV puts that venv elsewhere; PYTHON picks its interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
if [ "${1:-}" = "--check" ]; then
  check=1
  shift
fi

tools=${DARKROOM_LOCK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/darkroom/lock-venv}
pip_tools=$(grep -E '^pip-tools==' requirements/lock.txt || echo pip-tools)
if [ "$("$tools/bin/pip-compile" --version 2>/dev/null)" != "pip-compile, version ${pip_tools#pip-tools==}" ]; then
  echo "lock: installing $pip_tools into $tools"
  rm -rf "$tools"
  "${PYTHON:-python3}" -m venv "$tools"
  "$tools/bin/python" -m pip install -qq --disable-pip-version-check \
    -c requirements/lock.txt "$pip_tools"
fi

# The lock's header names this script as the way to make it.
export CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh"

output=requirements/lock.txt
if [ "$check" = 1 ]; then
  # pip-compile keeps the pins already in its output file unless told to upgrade:
  # compiling a copy of the lock changes it only where pyproject.toml moved away.
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  output=$scratch/lock.txt
  cp requirements/lock.txt "$output"
fi

"$tools/bin/python" -m piptools compile --quiet --all-extras --strip-extras \
  --unsafe-package torch --no-emit-index-url --no-emit-find-links \
  --constraint requirements/torch.txt --output-file "$output" "$@" pyproject.toml

if [ "$check" = 1 ]; then
  if ! diff -u requirements/lock.txt "$output"; then
    echo "lock: requirements/lock.txt does not match pyproject.toml; run bash scripts/lock.sh" >&2
    exit 1
  fi
  echo "lock: requirements/lock.txt matches pyproject.toml"
fi
